"""The ``fraudstream backtest`` command: a labelled file through the engine, in process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from fraudstream.cli_options import EXISTING_FILE, policy_and_rules
from fraudstream.train.cli import file_options, parse_date, read_options


@click.command()
@click.argument("path", type=EXISTING_FILE)
@click.option(
    "--version",
    "versions",
    multiple=True,
    required=True,
    help="Model version; the first is the champion. Give it again for more versions: each "
    "further one is the challenger (in shadow unless --share), one replay per extra version.",
)
@click.option("--share", type=float, default=0.0, show_default=True, help="Challenger share.")
@click.option("--shadow/--no-shadow", default=True, show_default=True)
@file_options
@click.option("--from", "start", default=None, help="Evaluate transactions from this date (UTC).")
@click.option("--to", "end", default=None, help="… up to (not including) this date.")
@click.option(
    "--known-fraud-since",
    default=None,
    help="Leave out transactions of cards whose fraud was already known (a fraud label "
    "reported before their day, for a transaction since this date): the Handbook's protocol.",
)
@click.option("--card-k", type=int, default=100, show_default=True, help="k of card precision@k.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("backtest-out"),
    show_default=True,
)
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Registry folder (default FRAUD_MODELS_DIR).",
)
@click.option(
    "--through-kafka",
    is_flag=True,
    help="Publish the file (transactions, and labels when they arrived) to a broker and score it "
    "with live workers instead of in process; the same metrics. Topics of its own.",
)
@click.option(
    "--bootstrap",
    default=None,
    help="Broker for --through-kafka (default FRAUD_KAFKA_BOOTSTRAP).",
)
@click.option("--workers", type=int, default=1, show_default=True, help="--through-kafka workers.")
@click.option(
    "--partitions", type=int, default=2, show_default=True, help="--through-kafka partitions."
)
@policy_and_rules(
    "Decide under this policy document (`policy show --version N --json`), in process.",
    "And with these rules (`rules show --version N --json`), in process.",
)
def backtest(
    path: Path,
    versions: tuple[str, ...],
    share: float,
    shadow: bool,
    mapping: tuple[str, ...],
    constants: tuple[str, ...],
    naive_utc: bool,
    label_delay_days: float | None,
    start: str | None,
    end: str | None,
    known_fraud_since: str | None,
    card_k: int,
    out: Path,
    models_dir: Path | None,
    through_kafka: bool,
    bootstrap: str | None,
    workers: int,
    partitions: int,
    policy_file: Path | None,
    rules_file: Path | None,
) -> None:
    """Replay a labelled file through the worker's engine in process (no broker), or with
    --through-kafka through a broker and live workers, labels applied when they arrived;
    write decisions, scores, outcomes, metrics and a precision–recall plot per version into
    --out, and print per version and per day AUC, average precision, card precision@k,
    decisions at the thresholds and money.

    \b
      fraudstream backtest history.parquet --version champion-v1 --version challenger-v2 \\
          --label-delay-days 7 --from 2026-03-01
      fraudstream backtest history.parquet --version champion-v1 \\
          --policy policy-v3.json --rules rules-v5.json    # as decided under those versions
    """
    from fraudstream.backtest.api import backtest_file
    from fraudstream.backtest.run import ThroughKafka
    from fraudstream.cli_controls import read_policy_file, read_rules_file
    from fraudstream.core.policy import NO_POLICY
    from fraudstream.core.rules import NO_RULES
    from fraudstream.settings import get_settings

    through = None
    if through_kafka:
        through = ThroughKafka(
            bootstrap or get_settings().kafka_bootstrap, workers, partitions, out / "workers"
        )
    t0 = time.perf_counter()
    result = backtest_file(
        path,
        list(versions),
        models_dir=models_dir,
        share=share,
        shadow=shadow,
        label_delay_days=label_delay_days,
        start=parse_date(start),
        end=parse_date(end),
        known_since=parse_date(known_fraud_since),
        card_k=card_k,
        out=out,
        progress=_progress,
        through=through,
        policy=NO_POLICY if policy_file is None else read_policy_file(policy_file),
        rules=NO_RULES if rules_file is None else read_rules_file(rules_file),
        **read_options(mapping, constants, naive_utc),
    )
    click.echo("", err=True)
    click.echo(result["text"])
    for name, p in result["files"].items():
        click.echo(f"{name}: {p}")
    click.echo(f"({time.perf_counter() - t0:.0f}s)", err=True)


def _progress(done: int, total: int, _last: list[Any] = [0.0]) -> None:  # noqa: B006
    now = time.monotonic()
    if now - _last[0] >= 2.0 or done == total:
        _last[0] = now
        click.echo(f"\rdecided {done:,} / {total:,} transactions", nl=False, err=True)
