"""``fraudstream bench``: register with ``main.add_command(bench)`` (fraudstream/cli.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from fraudstream.bench.config import CONTENDERS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 1000,5000") from exc


@click.command("bench")
@click.option(
    "--quick",
    is_flag=True,
    help="20,000 transactions, two 10 s rates (1,000 and 2,000/s): < 4 min.",
)
@click.option("-n", "--count", type=int, default=None, help="Transactions to preload [200,000].")
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option("--rates", default=None, help="Offered rates per second, comma-separated "
              "[1000,2000,5000 and half the measured maximum; --quick: 1000,2000].")  # fmt: skip
@click.option("--rate-seconds", type=float, default=None, help="Seconds per offered rate [30; "
              "--quick: 10].")  # fmt: skip
@click.option("--warmup-seconds", type=float, default=None, help="Seconds offered at the "
              "first rate before the measured ones, reported as a warm-up row [40; --quick: "
              "15].")  # fmt: skip
@click.option("--cap-seconds", type=float, default=None, help="Stop a throughput contender "
              "that has not finished after this long [180; --quick: 20, the naive baseline "
              "10].")  # fmt: skip
@click.option("--only", default=",".join(CONTENDERS), show_default=True,
              help="Contenders to run, comma-separated.")  # fmt: skip
@click.option("--workers", default="2,1", show_default=True, help="Worker process counts.")
@click.option("--handwritten-x2/--no-handwritten-x2", default=None, help="Also run two "
              "processes of the hand-written ceiling: what two processes reach on these cores "
              "[on; --quick: off, its runs are too short for two processes].")  # fmt: skip
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Model registry [FRAUD_MODELS_DIR, else the repository's models/].")  # fmt: skip
@click.option("--bootstrap", default=None, help="Use this Kafka instead of starting a local "
              "broker [FRAUD_KAFKA_BOOTSTRAP if set].")  # fmt: skip
@click.option("--profile", is_flag=True, help="Run the single worker under cProfile.")
@click.option("--api/--no-api", default=True, show_default=True, help="The scoring-API "
              "section: POST /v1/score of one worker at fixed concurrency (needs worker in "
              "--only).")  # fmt: skip
@click.option("--api-concurrency", default=None, help="Concurrent connections per API run, "
              "comma-separated [1,16; --quick: 16].")  # fmt: skip
@click.option("--api-seconds", type=float, default=None, help="Seconds per API run [10; "
              "--quick: 5].")  # fmt: skip
@click.option("--api-tool", type=click.Choice(["auto", "wrk", "aiohttp"]), default="auto",
              show_default=True, help="API load tool; auto: wrk when on PATH, else the aiohttp "
              "closed loop.")  # fmt: skip
@click.option("--guarantee", type=click.Choice(["exactly_once", "at_least_once"]),
              default="exactly_once", show_default=True, help="The worker's processing "
              "guarantee in every worker row (FRAUD_PROCESSING_GUARANTEE).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              default=Path("bench-results"), show_default=True)  # fmt: skip
def bench(
    quick: bool,
    count: int | None,
    partitions: int,
    rates: str | None,
    rate_seconds: float | None,
    warmup_seconds: float | None,
    cap_seconds: float | None,
    only: str,
    workers: str,
    handwritten_x2: bool | None,
    models_dir: Path | None,
    bootstrap: str | None,
    profile: bool,
    api: bool,
    api_concurrency: str | None,
    api_seconds: float | None,
    api_tool: str,
    guarantee: str,
    seed: int,
    out: Path,
) -> None:
    """The end-to-end benchmark on a real broker: the worker against three ceilings
    (pass-through, Faust pass-through, hand-written), the naive Faust baseline and the Quix
    Streams peer, on the same preloaded transactions and models (champion + challenger, share
    0.5, shadow on); then latency at fixed offered rates; then the scoring API (POST
    /v1/score) of one worker at fixed concurrency, with wrk when installed. Prints the table
    and writes bench.json and bench.md to --out.

    \b
      fraudstream bench --quick                  # about 2-3 minutes
      fraudstream bench                          # 200,000 transactions, 1,000-5,000/s
      fraudstream bench --quick --guarantee at_least_once
      fraudstream bench --only worker,handwritten -n 50000
      fraudstream bench --quick --no-api         # skip the scoring-API section
    """
    from fraudstream.bench.common import REPO
    from fraudstream.bench.config import BenchConfig
    from fraudstream.bench.harness import Bench
    from fraudstream.bench.report import render_rich, write

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
        "api": api,
        "api_tool": api_tool,
        "guarantee": guarantee,
    }
    if api_tool == "wrk" and api and shutil.which("wrk") is None:
        raise click.BadParameter(
            "wrk is not on PATH (apt-get install wrk)", param_hint="--api-tool"
        )
    if api_concurrency is not None:
        conc = tuple(int(c) for c in _floats(api_concurrency))
        if not conc or min(conc) < 1:
            raise click.BadParameter("give positive integers, e.g. 1,16",
                                     param_hint="--api-concurrency")  # fmt: skip
        kw["api_concurrency"] = conc
    if api_seconds is not None:
        kw["api_seconds"] = api_seconds
    if count is not None:
        kw["n"] = count
    if rates is not None:
        kw["rates"] = _floats(rates)
        kw["half_max_rate"] = False
    if rate_seconds is not None:
        kw["rate_seconds"] = rate_seconds
    if handwritten_x2 is not None:
        kw["handwritten_x2"] = handwritten_x2
    if warmup_seconds is not None:
        kw["warmup_seconds"] = warmup_seconds
    if cap_seconds is not None:
        kw["cap_seconds"] = cap_seconds
    cfg = BenchConfig.quick_config(**kw) if quick else BenchConfig(**kw)  # type: ignore[arg-type]
    result = Bench(cfg, log=lambda m: click.echo(m, err=True)).run()
    render_rich(result)
    js, md = write(result, out)
    click.echo(f"wrote {js} and {md} ({result['elapsed_s']:.0f} s)", err=True)
