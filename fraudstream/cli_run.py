"""``fraudstream worker``, ``simulate`` and ``demo``: the long-running processes (a stream worker,
the simulator's traffic, everything at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fraudstream.settings import get_settings


@click.command()
def worker() -> None:
    """Run a stream worker. Several may run; they share the partitions.

    \b
      FRAUD_KAFKA_BOOTSTRAP=127.0.0.1:9092 fraudstream worker
      FRAUD_WEB_PORT=6067 FRAUD_DATA_DIR=.fraudstream/w2 fraudstream worker   # a second one
    """
    from fraudstream.app.worker import run_worker

    run_worker(get_settings())


@click.command()
@click.option(
    "-n",
    "--count",
    type=int,
    default=None,
    help="Transactions to send (default: run until --duration or Ctrl-C).",
)
@click.option(
    "--rate",
    type=float,
    default=100.0,
    show_default=True,
    help="Per second; 0 = as fast as possible.",
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fraud-rate", type=float, default=0.004, show_default=True)
@click.option("--cards", type=int, default=5000, show_default=True)
@click.option(
    "--feedback/--no-feedback", default=True, show_default=True, help="Publish labels later."
)
@click.option(
    "--feedback-delay",
    type=float,
    default=30.0,
    show_default=True,
    help="Mean label delay, seconds.",
)
@click.option(
    "--missing-labels", type=float, default=0.1, show_default=True, help="Share never labelled."
)
@click.option(
    "--reversals",
    type=float,
    default=0.01,
    show_default=True,
    help="Share of labels reversed later.",
)
@click.option(
    "--to-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a labelled CSV/Parquet instead of publishing.",
)
def simulate(
    count: int | None,
    rate: float,
    duration: float | None,
    seed: int,
    fraud_rate: float,
    cards: int,
    feedback: bool,
    feedback_delay: float,
    missing_labels: float,
    reversals: float,
    to_file: Path | None,
) -> None:
    """Publish realistic card transactions (and delayed labels) at a given rate.

    \b
      fraudstream simulate --rate 500 --duration 60
      fraudstream simulate -n 100000 --rate 0            # as fast as possible
      fraudstream simulate -n 200000 --to-file history.parquet
    """
    from fraudstream.sim.generator import SimConfig

    cfg = SimConfig(seed=seed, fraud_rate=fraud_rate, n_cards=cards)
    if to_file is not None:
        from fraudstream.sim.files import write_labelled
        from fraudstream.sim.generator import generate

        rows = write_labelled(to_file, generate(cfg, n=count or 100_000))
        click.echo(f"wrote {rows} labelled transactions to {to_file}")
        return
    from fraudstream.sim.publisher import publish

    def progress(st: Any) -> None:
        click.echo(
            f"\rsent {st.sent:>9d}  acked {st.acked:>9d}  frauds {st.frauds:>6d}  "
            f"labels {st.labels_sent:>6d}",
            nl=False,
            err=True,
        )

    try:
        stats = publish(
            get_settings(),
            n=count,
            rate=rate,
            seed=seed,
            config=cfg,
            duration_s=duration,
            feedback=feedback,
            feedback_delay_s=feedback_delay,
            missing_share=missing_labels,
            reversal_share=reversals,
            progress=progress,
        )
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        return
    click.echo(
        f"\nsent {stats.sent} transactions ({stats.frauds} fraudulent), {stats.labels_sent} labels,"
        f" in {stats.elapsed_s:.1f}s",
        err=True,
    )


@click.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--rate",
    type=float,
    default=300.0,
    show_default=True,
    help="Simulated transactions per second.",
)
@click.option("--partitions", type=int, default=4, show_default=True)
def demo(duration: float | None, rate: float, partitions: int) -> None:
    """Everything at once on the local broker, with a live view; Ctrl-C stops and cleans up.

    \b
      fraudstream demo
      fraudstream demo --duration 60 --rate 1000
    """
    from fraudstream.demo import run_demo

    run_demo(get_settings(), duration, rate, partitions)
