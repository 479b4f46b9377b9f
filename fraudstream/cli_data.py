"""``fraudstream score``, ``report`` and ``outcomes export``: a file decided in process, and the
decisions joined with their outcomes, summarised or exported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fraudstream.cli_options import file_option, policy_and_rules
from fraudstream.settings import get_settings


@click.command()
@click.argument("source", type=click.File("rb"), default="-")
@policy_and_rules(
    "Decide under this policy document (`policy show --json`, `policy suggest --out`).",
    "And with these rules (`rules show --json`, or a file of your own).",
)
def score(source: Any, policy_file: Path | None, rules_file: Path | None) -> None:
    """Decide transactions (JSON lines; - for stdin) in this process, without Kafka.

    The worker's own engine, models, thresholds and start-up routing (FRAUD_CHAMPION,
    FRAUD_CHALLENGER, ...); per-card state starts empty and builds up in file order. Decisions
    go to stdout as JSON lines; lines that cannot be decided are reported on stderr with their
    dead-letter reason code, and the exit code is then 1.

    \b
      fraudstream score transactions.jsonl
      head -n 3 transactions.jsonl | fraudstream score
      fraudstream score --policy policy.json --rules rules.json transactions.jsonl   # dry run
    """
    from fraudstream.cli_controls import read_policy_file, read_rules_file
    from fraudstream.core.policy import NO_POLICY
    from fraudstream.core.rules import NO_RULES
    from fraudstream.offline import score_lines

    run = score_lines(
        get_settings(),
        source,
        emit=lambda raw: click.echo(raw.decode()),
        report=lambda text: click.echo(f"not decided: {text}", err=True),
        policy=NO_POLICY if policy_file is None else read_policy_file(policy_file),
        rules=NO_RULES if rules_file is None else read_rules_file(rules_file),
    )
    click.echo(
        f"{run.decided} decided, {run.duplicates} duplicates, {run.rejected} not decided", err=True
    )
    sys.exit(1 if run.rejected else 0)


_WHEN = "ISO date/date-time (UTC unless an offset is given) or a duration ago: 36h, 7d"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--since", default=None, help=f"Decisions made at or after this. {_WHEN}.")
@click.option("--until", default=None, help=f"Decisions made before this. {_WHEN}.")
@click.option(
    "--maturity-days",
    type=float,
    default=None,
    help="Count only decisions older than this (default: measured, the time within which 95 % "
    "of fraud labels arrived).",
)
@click.option(
    "--unlabelled",
    type=click.Choice(["exclude", "genuine"]),
    default="exclude",
    show_default=True,
    help="exclude: labelled outcomes only; genuine: a mature decision without a label is genuine.",
)
@file_option(
    "--rates",
    "rates_file",
    'Convert money with this JSON: {"base": "EUR", "rates": {"GBP": 1.17, ...}}.',
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 100_000),
    default=0,
    show_default=True,
    help="Also a card-level bootstrap with this many resamples per comparison (seeded).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="The bootstrap's seed.")
@click.option(
    "--detect-relative",
    type=click.FloatRange(0, 10, min_open=True),
    default=0.10,
    show_default=True,
    help="The difference to plan for in the power line, as a share of the champion's value.",
)
def report(
    as_json: bool,
    since: str | None,
    until: str | None,
    maturity_days: float | None,
    unlabelled: str,
    rates_file: Path | None,
    bootstrap: int,
    seed: int,
    detect_relative: float,
) -> None:
    """Per-version outcomes, money and champion vs challenger, with card-level 95 % intervals.

    Counts mature decisions only (decided before now minus the label maturity). How to read it:
    docs/CONTRACT.md, "Reading the report".

    \b
      fraudstream report
      fraudstream report --since 7d --maturity-days 3
      fraudstream report --rates rates.json --json | jq .comparisons
    """
    from fraudstream.core.evaluation import Options
    from fraudstream.core.money import load_rates
    from fraudstream.report import Query, build, render

    rates = None
    if rates_file is not None:
        rates = load_rates(rates_file.read_text(encoding="utf-8"), str(rates_file))
    options = Options(
        unlabelled=unlabelled,  # type: ignore[arg-type]
        rates=rates,
        bootstrap=bootstrap,
        seed=seed,
        detect_relative=detect_relative,
    )
    summary = build(get_settings(), Query(since, until, maturity_days), options)
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render(summary))


@click.group()
def outcomes() -> None:
    """Decisions joined with their outcomes, for analysts."""


@outcomes.command("export")
@click.option("--since", default=None, help=f"Decisions made at or after this. {_WHEN}.")
@click.option("--until", default=None, help=f"Decisions made before this. {_WHEN}.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv"]),
    default="parquet",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="The file to write (replaced when complete).",
)
def outcomes_export(since: str | None, until: str | None, fmt: str, out: Path) -> None:
    """One row per transaction and model version: decision, score, label, outcome, money, times.

    \b
      fraudstream outcomes export --since 7d --out outcomes.parquet
      duckdb -c "SELECT model_version, variant, outcome, count(*) FROM 'outcomes.parquet'
                 GROUP BY ALL ORDER BY ALL"
    """
    from fraudstream.export import export

    done = export(get_settings(), since, until, fmt, out)  # type: ignore[arg-type]
    click.echo(f"wrote {done.rows} rows to {done.path}")
