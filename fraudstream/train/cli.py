"""The ``fraudstream train`` command and the labelled-file options it shares with ``backtest``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"{v!r} is not field=value", param_hint=what)
        k, _, rest = v.partition("=")
        out[k.strip()] = rest
    return out


def parse_date(value: str | None) -> float | None:
    """A date or RFC 3339 time (UTC when no offset) → POSIX seconds."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date (2018-08-01) or time") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def file_options(f: F) -> F:
    """--map / --set / --naive-utc / --label-delay-days: how to read a labelled file."""
    f = click.option(
        "--label-delay-days",
        type=float,
        default=None,
        help="Labels become known this many days after each transaction (when the file has no "
        "reported_at column), e.g. 7 for the Handbook's protocol.",
    )(f)
    f = click.option(
        "--naive-utc",
        is_flag=True,
        help="Read event times without a UTC offset as UTC (otherwise they are refused).",
    )(f)
    f = click.option(
        "--set",
        "constants",
        multiple=True,
        help="field=value for every row of the file (e.g. currency=EUR).",
    )(f)
    return click.option(
        "--map",
        "mapping",
        multiple=True,
        help="field=column of the file (e.g. card_id=CUSTOMER_ID); fields: the Transaction's, "
        "is_fraud, fraud_kind, reported_at.",
    )(f)


def read_options(
    mapping: tuple[str, ...], constants: tuple[str, ...], naive_utc: bool
) -> dict[str, Any]:
    return {
        "mapping": _pairs(mapping, "--map"),
        "constants": _pairs(constants, "--set"),
        "naive_utc": naive_utc,
    }


@click.command()
@click.option("--version", "version", required=True, help="Name of the new model version.")
@click.option(
    "--from-file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Labelled CSV or Parquet; default: the simulator.",
)
@file_options
@click.option("--until", default=None, help="Use only transactions before this date (UTC).")
@click.option(
    "-n", "--count", type=int, default=300_000, show_default=True, help="Simulated transactions."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trees", type=int, default=400, show_default=True)
@click.option("--depth", type=int, default=5, show_default=True)
@click.option(
    "--class-weight",
    type=click.Choice(["none", "sqrt", "balanced"]),
    default="none",
    show_default=True,
    help="Weight of a fraud: 1, sqrt(genuine/fraud) or genuine/fraud.",
)
@click.option(
    "--warmup-days",
    type=float,
    default=0.0,
    show_default=True,
    help="Earliest days only build state (cards and merchants look new at a history's start).",
)
@click.option(
    "--search",
    is_flag=True,
    help="Choose depth, leaf size, class weight and trees on time-ordered folds first.",
)
@click.option(
    "--refit",
    is_flag=True,
    help="Fit the saved model on every row after the warm-up, validation period included.",
)
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Registry folder (default FRAUD_MODELS_DIR).",
)
def train(
    version: str,
    from_file: Path | None,
    mapping: tuple[str, ...],
    constants: tuple[str, ...],
    naive_utc: bool,
    label_delay_days: float | None,
    until: str | None,
    count: int,
    seed: int,
    trees: int,
    depth: int,
    class_weight: str,
    warmup_days: float,
    search: bool,
    refit: bool,
    models_dir: Path | None,
) -> None:
    """Train and register a model version, features replayed point-in-time through the
    worker's own code (every label applied when it arrived).

    \b
      fraudstream train --version champion-v3
      fraudstream train --version hb-1 --from-file transactions.parquet --naive-utc \\
          --map card_id=CUSTOMER_ID --map merchant_id=TERMINAL_ID --map amount=TX_AMOUNT \\
          --map event_time=TX_DATETIME --map transaction_id=TRANSACTION_ID \\
          --map is_fraud=TX_FRAUD --set currency=EUR --label-delay-days 7 --until 2018-08-01
    """
    from fraudstream.settings import get_settings
    from fraudstream.train.search import Params
    from fraudstream.train.trainer import train_from_file, train_from_simulator

    target = models_dir or get_settings().models_dir
    params = Params(n_trees=trees, max_depth=depth, class_weight=class_weight, seed=seed)
    kw: dict[str, Any] = {
        "params": params,
        "warmup_days": warmup_days,
        "search_grid": search,
        "refit": refit,
        "log": lambda m: click.echo(m, err=True),
    }
    click.echo(f"training {version}: replaying the history point-in-time…", err=True)
    if from_file is not None:
        meta, report = train_from_file(
            from_file,
            version,
            target,
            label_delay_days=label_delay_days,
            until=parse_date(until),
            **read_options(mapping, constants, naive_utc),
            **kw,
        )
    else:
        meta, report = train_from_simulator(version, target, n=count, seed=seed, **kw)
    if meta is None:
        raise click.ClickException("training did not produce a model")
    click.echo(f"registered {meta.version} in {target} (sha256 {meta.sha256[:12]})")
    click.echo(summary(report))


def summary(report: dict[str, Any]) -> str:
    m, tr = report["metrics"], report["training"]
    lines = [
        f"  validation {tr['validation']['from']} … {tr['validation']['to']}: "
        f"{m['rows']:,} transactions, {m['frauds']:,} frauds",
        f"  AUC {m['auc_roc']:.4f}  average precision {m['average_precision']:.4f}  "
        + "  ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in m.items() if "card_prec" in k),
        f"  fitted on {tr['fitted_on']['rows']:,} rows ({tr['fitted_on']['from']} … "
        f"{tr['fitted_on']['to']}), {report['n_trees']} trees, params {report['params']}",
        f"  thresholds review {report['thresholds']['review']:.4f} decline "
        f"{report['thresholds']['decline']:.4f} ({report['threshold_rule']})",
    ]
    return "\n".join(lines)
