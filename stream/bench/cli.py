"""``fraudstream bench``: register with ``main.add_command(bench)`` (stream/cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from stream.bench.harness import CONTENDERS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 1000,5000") from exc


@click.command("bench")
@click.option(
    "--quick", is_flag=True, help="20,000 transactions, one 10 s rate (1,000/s): < 3 min."
)
@click.option("-n", "--count", type=int, default=None, help="Transactions to preload [200,000].")
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option("--rates", default=None, help="Offered rates per second, comma-separated "
              "[1000,5000 and half the measured maximum; --quick: 1000].")  # fmt: skip
@click.option("--rate-seconds", type=float, default=None, help="Seconds per offered rate [30; "
              "--quick: 10].")  # fmt: skip
@click.option("--cap-seconds", type=float, default=None, help="Stop a throughput contender "
              "that has not finished after this long [180; --quick: 20].")  # fmt: skip
@click.option("--only", default=",".join(CONTENDERS), show_default=True,
              help="Contenders to run, comma-separated.")  # fmt: skip
@click.option("--workers", default="2,1", show_default=True, help="Worker process counts.")
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Model registry [FRAUD_MODELS_DIR, else the repository's models/].")  # fmt: skip
@click.option("--bootstrap", default=None, help="Use this Kafka instead of starting a local "
              "broker [FRAUD_KAFKA_BOOTSTRAP if set].")  # fmt: skip
@click.option("--profile", is_flag=True, help="Run the single worker under cProfile.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              default=Path("bench-results"), show_default=True)  # fmt: skip
def bench(
    quick: bool,
    count: int | None,
    partitions: int,
    rates: str | None,
    rate_seconds: float | None,
    cap_seconds: float | None,
    only: str,
    workers: str,
    models_dir: Path | None,
    bootstrap: str | None,
    profile: bool,
    seed: int,
    out: Path,
) -> None:
    """The end-to-end benchmark on a real broker: the worker against two ceilings (pass-through,
    hand-written), the naive Faust baseline and the Quix Streams peer, on the same preloaded
    transactions and models (champion + challenger, share 0.5, shadow on); then latency at
    fixed offered rates. Prints the table and writes bench.json and bench.md to --out.

    \b
      fraudstream bench --quick                  # about 2-3 minutes
      fraudstream bench                          # 200,000 transactions, 1,000 and 5,000/s
      fraudstream bench --only worker,handwritten -n 50000
    """
    from stream.bench.harness import REPO, Bench, BenchConfig
    from stream.bench.report import render_rich, write

    chosen = tuple(x.strip() for x in only.split(",") if x.strip())
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        raise click.BadParameter(f"unknown contender(s) {unknown}; known: {', '.join(CONTENDERS)}")
    if models_dir is None:
        env_dir = os.environ.get("FRAUD_MODELS_DIR")
        models_dir = Path(env_dir) if env_dir else REPO / "models"
    kw: dict[str, object] = {
        "partitions": partitions,
        "only": chosen,
        "workers": tuple(int(w) for w in _floats(workers)),
        "models_dir": models_dir.resolve(),
        "bootstrap": bootstrap or os.environ.get("FRAUD_KAFKA_BOOTSTRAP") or None,
        "profile": profile,
        "profile_out": (out / "worker.prof").resolve() if profile else None,
        "seed": seed,
    }
    if count is not None:
        kw["n"] = count
    if rates is not None:
        kw["rates"] = _floats(rates)
        kw["half_max_rate"] = False
    if rate_seconds is not None:
        kw["rate_seconds"] = rate_seconds
    if cap_seconds is not None:
        kw["cap_seconds"] = cap_seconds
    cfg = BenchConfig.quick_config(**kw) if quick else BenchConfig(**kw)  # type: ignore[arg-type]
    result = Bench(cfg, log=lambda m: click.echo(m, err=True)).run()
    render_rich(result)
    js, md = write(result, out)
    click.echo(f"wrote {js} and {md} ({result['elapsed_s']:.0f} s)", err=True)
