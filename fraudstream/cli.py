"""The ``fraudstream`` command: one small function per verb, no logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fraudstream import __version__
from fraudstream.errors import FraudStreamError
from fraudstream.settings import Settings, get_settings

BROKER_HOME = Path(".fraudstream/broker")


def settings() -> Settings:
    return get_settings()


class FriendlyGroup(click.Group):
    """Turns our errors into one clear line and exit code 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FraudStreamError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except Exception as exc:
            from confluent_kafka import KafkaException

            if not isinstance(exc, KafkaException):
                raise
            s = settings()
            click.secho(
                f"error: cannot talk to Kafka at FRAUD_KAFKA_BOOTSTRAP={s.kafka_bootstrap} "
                f"(security protocol {s.kafka_security_protocol}): {exc.args[0].str()}. "
                "Is the broker running (`fraudstream broker start`), and are the "
                "FRAUD_KAFKA_SECURITY_PROTOCOL / FRAUD_KAFKA_SASL_* settings right?",
                fg="red",
                err=True,
            )
            sys.exit(2)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", "-V", prog_name="fraudstream", message="%(prog)s %(version)s"
)
def main() -> None:
    """fraudstream: real-time card-fraud scoring on Kafka.

    Settings come from FRAUD_* environment variables (see README). Examples:

    \b
      fraudstream broker start
      fraudstream topics create
      fraudstream worker
      fraudstream simulate --rate 500 --duration 60
      fraudstream tail fraud.decisions
    """


# --- broker ----------------------------------------------------------------------------------
@main.group()
def broker() -> None:
    """A local single-node Apache Kafka (KRaft) for development, demos and tests.

    Its data (topics, records, committed offsets) is kept across stop and start, on the same
    ports; `start --fresh` formats new storage instead.

    \b
      fraudstream broker start            # port 9092 if free, else a free port
      fraudstream broker start --port 19092
      fraudstream broker start --fresh    # delete every topic and start empty
      fraudstream broker status
      fraudstream broker stop
    """


@broker.command("start")
@click.option("--port", type=int, default=None, help="Listener port (default 9092, else free).")
@click.option("--home", type=click.Path(path_type=Path), default=BROKER_HOME, show_default=True)
@click.option(
    "--secure",
    is_flag=True,
    help="Also open a SASL_SSL listener (generated CA; PLAIN and SCRAM-SHA-512).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Format new storage: every topic and record of this broker is deleted.",
)
def broker_start(port: int | None, home: Path, secure: bool, fresh: bool) -> None:
    """Start the broker (downloads the jars with Maven once) and print its bootstrap address.

    A broker started before resumes on its stored data and ports (topics and records kept);
    --fresh formats new storage. Workers whose local tables belong to the old data notice
    and rebuild them from the new cluster's changelogs.

    With --secure it also prints the settings for the SASL_SSL listener; the generated
    password is never printed: it is in HOME/sasl-credentials.json (mode 0600).

    \b
      fraudstream broker start
      fraudstream broker start --fresh
      fraudstream broker start --secure
    """
    from fraudstream.kafka.broker import LocalBroker

    home.mkdir(parents=True, exist_ok=True)
    b = LocalBroker(home, secure=secure)
    if b.is_running() and not fresh:
        state = "already running"
    else:
        state = "resumed on its stored data" if not fresh and b.stored() else "new storage"
    info = b.start(port=port, fresh=fresh)
    click.echo(state, err=True)
    click.echo(info.bootstrap)
    if info.bootstrap != settings().kafka_bootstrap.replace("localhost", "127.0.0.1"):
        click.echo(f"export FRAUD_KAFKA_BOOTSTRAP={info.bootstrap}", err=True)
    if secure and info.secure_bootstrap:
        click.echo(f"SASL_SSL listener: {info.secure_bootstrap}", err=True)
        for name, value in b.client_env().items():
            if name == "FRAUD_KAFKA_SASL_PASSWORD":
                click.echo(f"# {name}: the password in {b.credentials_file}", err=True)
            else:
                click.echo(f"export {name}={value}", err=True)


@broker.command("stop")
@click.option("--home", type=click.Path(path_type=Path), default=BROKER_HOME, show_default=True)
def broker_stop(home: Path) -> None:
    """Stop the broker cleanly and free its port."""
    from fraudstream.kafka.broker import LocalBroker

    click.echo("stopped" if LocalBroker(home).stop() else "not running")


@broker.command("status")
@click.option("--home", type=click.Path(path_type=Path), default=BROKER_HOME, show_default=True)
def broker_status(home: Path) -> None:
    """Say whether the broker runs (exit 0) or not (exit 1)."""
    from fraudstream.kafka.broker import LocalBroker

    b = LocalBroker(home)
    info = b.info()
    if info is not None and b.is_running():
        click.echo(f"running pid={info.pid} bootstrap={info.bootstrap}")
        return
    stored = b.stored()
    if stored is None:
        click.echo("not running (no stored data: `broker start` formats new storage)")
    else:
        click.echo(
            f"not running (data kept for 127.0.0.1:{stored.port}: `broker start` resumes it, "
            "`broker start --fresh` deletes it)"
        )
    sys.exit(1)


# --- topics ----------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """Create, describe, upgrade and scale the contract's topics.

    \b
      fraudstream topics create
      fraudstream topics describe
      fraudstream topics upgrade
      fraudstream topics scale --partitions 8
    """


@topics.command("create")
def topics_create() -> None:
    """Create every missing topic (existing ones are left alone).

    \b
      fraudstream topics create
      FRAUD_PARTITIONS=8 fraudstream topics create
    """
    from fraudstream.kafka.admin import create_topics

    created = create_topics(settings())
    click.echo("\n".join(f"created {t}" for t in created) or "all topics exist")


@topics.command("upgrade")
def topics_upgrade() -> None:
    """Bring existing topics up to this release: create missing ones, alter settings that differ.

    The outcome topics (outcomes, false positives/negatives, the feedback dead letters) keep
    their records for FRAUD_DECISION_RETENTION_DAYS, as long as labels can still change them;
    clusters made by earlier releases have the broker default (7 days). Safe to run again.

    \b
      fraudstream topics upgrade
      FRAUD_DECISION_RETENTION_DAYS=120 fraudstream topics upgrade
    """
    from fraudstream.kafka.admin import upgrade_topics

    created, changes = upgrade_topics(settings())
    for name in created:
        click.echo(f"created {name}")
    for c in changes:
        click.echo(f"{c.topic}: {c.key} {c.before} -> {c.after}")
    if not created and not changes:
        click.echo("topics are up to date")


@topics.command("describe")
def topics_describe() -> None:
    """Show each topic's partitions (and whether it is missing).

    \b
      fraudstream topics describe
      FRAUD_KAFKA_BOOTSTRAP=kafka:9092 fraudstream topics describe
    """
    from fraudstream.kafka.admin import config_drift, describe_topics

    s = settings()
    for name, have, want in describe_topics(s):
        state = "MISSING" if have is None else f"{have} partitions"
        click.echo(
            f"{name:45s} {state}" + ("" if have in (None, want) else f" (configured {want})")
        )
    drift = config_drift(s)
    for c in drift:
        click.echo(f"{c.topic}: {c.key} is {c.before}, this release sets {c.after}", err=True)
    if drift:
        click.echo("run `fraudstream topics upgrade` to apply them", err=True)


@topics.command("scale")
@click.option("--partitions", type=int, required=True, help="New partition count (only up).")
def topics_scale(partitions: int) -> None:
    """Raise partitions of `transactions` and every co-partitioned topic together.

    Per-card state follows the partition a card hashes to. After scaling, about
    (1 - old/new) of the cards hash to a new partition and start with fresh velocity state
    there; their old state ages out. Routing is unaffected: it depends on the card only.
    Running workers see the new partitions at their next metadata refresh (Faust's
    consumer_metadata_max_age_ms, 5 minutes by default) and rebalance; restart them one at a
    time to apply it at once. Upstream producers also write only to the old partitions until
    their own metadata refresh. Shrinking is refused.

    \b
      fraudstream topics scale --partitions 8
    """
    from fraudstream.kafka.admin import scale_partitions

    changes = scale_partitions(settings(), partitions)
    for name, before, after in changes:
        click.echo(f"{name}: {before} -> {after}")
    if not changes:
        click.echo(f"nothing to do: topics already have {partitions} partitions")
    else:
        click.echo(
            "note: cards that now hash to a new partition start with fresh per-card state "
            "there; restart workers one at a time if they do not pick up the new partitions."
        )


# --- worker ----------------------------------------------------------------------------------
@main.command()
def worker() -> None:
    """Run a stream worker. Several may run; they share the partitions.

    \b
      FRAUD_KAFKA_BOOTSTRAP=127.0.0.1:9092 fraudstream worker
      FRAUD_WEB_PORT=6067 FRAUD_DATA_DIR=.fraudstream/w2 fraudstream worker   # a second one
    """
    from fraudstream.app.worker import run_worker

    run_worker(settings())


# --- models and routing ----------------------------------------------------------------------
@main.group()
def models() -> None:
    """Registered model versions.

    \b
      fraudstream models list
      fraudstream models verify champion-v1
    """


@models.command("list")
def models_list() -> None:
    """Show registered versions with their metrics and thresholds."""
    from fraudstream.core.registry import list_versions, require_registry

    for m in list_versions(require_registry(settings().models_dir)):
        click.echo(
            f"{m.version:16s} trees={m.n_trees:<4d} "
            f"auc={m.metrics.get('auc_roc', float('nan')):.4f} "
            f"ap={m.metrics.get('average_precision', float('nan')):.4f} "
            f"review>={m.review_threshold:.4f} decline>={m.decline_threshold:.4f} "
            f"sha256={m.sha256[:12]}"
        )


@models.command("verify")
@click.argument("versions", nargs=-1)
def models_verify(versions: tuple[str, ...]) -> None:
    """Check sha256, format and feature names of VERSIONS (default: all). Exit 1 on a problem."""
    from fraudstream.core.registry import list_versions, require_registry, verify

    s = settings()
    names = list(versions) or [m.version for m in list_versions(require_registry(s.models_dir))]
    bad = 0
    for v in names:
        problems = verify(s.models_dir, v)
        click.echo(f"{v}: " + ("ok" if not problems else "; ".join(problems)))
        bad += bool(problems)
    sys.exit(1 if bad else 0)


def _current_routing() -> Any:
    from fraudstream.kafka.control import latest_routing, startup_routing

    s = settings()
    return latest_routing(s) or startup_routing(s)


@main.command()
@click.option("--champion", default=None, help="Champion version.")
@click.option("--challenger", default=None, help="Challenger version ('none' to remove).")
@click.option("--share", type=click.FloatRange(0, 1), default=None, help="Challenger share 0–1.")
@click.option("--shadow/--no-shadow", default=None, help="The other model scores too.")
@click.option("--salt", default=None, help="Changing it reshuffles which cards go where.")
def route(
    champion: str | None,
    challenger: str | None,
    share: float | None,
    shadow: bool | None,
    salt: str | None,
) -> None:
    """Change routing live for every worker (through the control topic).

    \b
      fraudstream route --challenger challenger-v2 --share 0.2 --shadow
      fraudstream route --share 0.5
      fraudstream route --challenger none
    """
    from dataclasses import replace

    from fraudstream.core.messages import utc_now_iso
    from fraudstream.kafka.control import publish_routing

    r = _current_routing()
    changes: dict[str, Any] = {"updated_at": utc_now_iso()}
    if champion:
        changes["champion"] = champion
    if challenger is not None:
        changes["challenger"] = None if challenger.lower() == "none" else challenger
        if changes["challenger"] is None:
            changes["challenger_share"] = 0.0
    if share is not None:
        changes["challenger_share"] = share
    if shadow is not None:
        changes["shadow"] = shadow
    if salt is not None:
        changes["salt"] = salt
    new = replace(r, **changes)
    _check_versions_exist([new.champion, new.challenger])
    publish_routing(settings(), new)
    click.echo(
        f"routing published: champion={new.champion} challenger={new.challenger} "
        f"share={new.challenger_share} shadow={new.shadow}"
    )


def _check_versions_exist(versions: list[str | None]) -> None:
    from fraudstream.core.registry import list_versions

    known = {m.version for m in list_versions(settings().models_dir)}
    for v in versions:
        if v and v not in known:
            raise click.BadParameter(
                f"model version {v!r} is not in {settings().models_dir} "
                f"(known: {', '.join(sorted(known)) or 'none'}); train it or copy it there first"
            )


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def promote(yes: bool) -> None:
    """Make the challenger the champion (the old champion becomes the challenger at share 0).

    Shows the champion-vs-challenger report first and asks to confirm unless --yes.

    \b
      fraudstream promote
      fraudstream promote --yes
    """
    from dataclasses import replace

    from fraudstream.core.messages import utc_now_iso
    from fraudstream.kafka.control import publish_routing

    r = _current_routing()
    if not r.challenger:
        raise click.UsageError("there is no challenger to promote; set one with `route`")
    try:
        from fraudstream.report import render_report

        click.echo(render_report(settings()))
    except FraudStreamError as exc:
        click.echo(f"(no report: {exc})")
    if not yes:
        click.confirm(f"Promote {r.challenger} over {r.champion}?", abort=True)
    new = replace(
        r,
        champion=r.challenger,
        challenger=r.champion,
        challenger_share=0.0,
        updated_at=utc_now_iso(),
    )
    publish_routing(settings(), new)
    click.echo(f"promoted {new.champion}; {new.challenger} kept as challenger at share 0")


@main.command()
def rollback() -> None:
    """Undo the last promotion: the challenger (previous champion) decides again.

    \b
      fraudstream rollback
    """
    from dataclasses import replace

    from fraudstream.core.messages import utc_now_iso
    from fraudstream.kafka.control import publish_routing

    r = _current_routing()
    if not r.challenger:
        raise click.UsageError("no previous champion is recorded as challenger; use `route`")
    new = replace(
        r,
        champion=r.challenger,
        challenger=r.champion,
        challenger_share=0.0,
        updated_at=utc_now_iso(),
    )
    publish_routing(settings(), new)
    click.echo(f"rolled back: {new.champion} is champion again")


@main.command()
@click.argument("source", type=click.File("rb"), default="-")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Decide under this policy document (`policy show --json`, `policy suggest --out`).",
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="And with these rules (`rules show --json`, or a file of your own).",
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
        settings(),
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


# --- simulate, train, report ------------------------------------------------------------------
@main.command()
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
            settings(),
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


@main.command()
@click.option("--version", "version", required=True, help="Name of the new model version.")
@click.option(
    "--from-file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Labelled CSV or Parquet; default: the simulator.",
)
@click.option(
    "--map",
    "mapping",
    multiple=True,
    help="field=column, for --from-file (e.g. card_id=pan_token).",
)
@click.option(
    "-n", "--count", type=int, default=300_000, show_default=True, help="Simulated transactions."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trees", type=int, default=300, show_default=True)
def train(
    version: str,
    from_file: Path | None,
    mapping: tuple[str, ...],
    count: int,
    seed: int,
    trees: int,
) -> None:
    """Train and register a model version (features replayed through the worker's own code).

    \b
      fraudstream train --version champion-v3
      fraudstream train --version v4 --from-file history.parquet --map card_id=card --map amount=amt
    """
    from rich.console import Console

    from fraudstream.train.trainer import train_from_file, train_from_simulator

    s = settings()
    source = str(from_file) if from_file is not None else f"{count:,} simulated transactions"
    with Console(stderr=True).status(f"training {version} on {source} (features replayed)…"):
        if from_file is not None:
            cols = dict(m.split("=", 1) for m in mapping)
            meta, report = train_from_file(
                from_file, version, s.models_dir, cols, n_trees=trees, seed=seed
            )
        else:
            meta, report = train_from_simulator(
                version, s.models_dir, n=count, seed=seed, n_trees=trees
            )
    if meta is None:
        raise click.ClickException("training did not produce a model (see the report above)")
    click.echo(f"registered {meta.version} in {s.models_dir} (sha256 {meta.sha256[:12]})")
    for k, v in report.items():
        click.echo(f"  {k}: {v}")


_WHEN = "ISO date/date-time (UTC unless an offset is given) or a duration ago: 36h, 7d"


@main.command()
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
@click.option(
    "--rates",
    "rates_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='Convert money with this JSON: {"base": "EUR", "rates": {"GBP": 1.17, ...}}.',
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
    summary = build(settings(), Query(since, until, maturity_days), options)
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render(summary))


@main.group()
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

    done = export(settings(), since, until, fmt, out)  # type: ignore[arg-type]
    click.echo(f"wrote {done.rows} rows to {done.path}")


@main.command()
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

    run_demo(settings(), duration, rate, partitions)


# --- tail ------------------------------------------------------------------------------------
@main.command()
@click.argument("topic")
@click.option("--from-beginning/--from-end", default=True, show_default=True)
@click.option("-n", "--max-messages", type=int, default=0, help="Stop after N (0: follow).")
@click.option("--timeout", type=float, default=0.0, help="Stop after this many idle seconds.")
def tail(topic: str, from_beginning: bool, max_messages: int, timeout: float) -> None:
    """Follow TOPIC, pretty-printed (JSON values indented; dead-letter headers shown).

    \b
      fraudstream tail fraud.decisions -n 10
      fraudstream tail transactions.dlq
    """
    from fraudstream.kafka.tail import follow

    follow(settings(), topic, from_beginning, max_messages, timeout, click.echo)


def _register_bench() -> None:
    from fraudstream.bench.cli import bench

    main.add_command(bench)


_register_bench()


def _register_controls() -> None:
    import fraudstream.cli_controls  # noqa: F401 - registers `policy` and `rules` on main


_register_controls()

if __name__ == "__main__":  # pragma: no cover
    main()
