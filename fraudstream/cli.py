"""The ``fraudstream`` command: one small function per verb, no logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

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

    \b
      fraudstream broker start            # port 9092 if free, else a free port
      fraudstream broker start --port 19092
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
def broker_start(port: int | None, home: Path, secure: bool) -> None:
    """Start the broker (downloads the jars with Maven once) and print its bootstrap address.

    With --secure it also prints the settings for the SASL_SSL listener; the generated
    password is never printed: it is in HOME/sasl-credentials.json (mode 0600).

    \b
      fraudstream broker start
      fraudstream broker start --secure
    """
    from fraudstream.kafka.broker import LocalBroker

    home.mkdir(parents=True, exist_ok=True)
    b = LocalBroker(home, secure=secure)
    info = b.start(port=port)
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
    click.echo("not running")
    sys.exit(1)


# --- topics ----------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """Create, describe and scale the contract's topics.

    \b
      fraudstream topics create
      fraudstream topics describe
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


@topics.command("describe")
def topics_describe() -> None:
    """Show each topic's partitions (and whether it is missing).

    \b
      fraudstream topics describe
      FRAUD_KAFKA_BOOTSTRAP=kafka:9092 fraudstream topics describe
    """
    from fraudstream.kafka.admin import describe_topics

    for name, have, want in describe_topics(settings()):
        state = "MISSING" if have is None else f"{have} partitions"
        click.echo(
            f"{name:45s} {state}" + ("" if have in (None, want) else f" (configured {want})")
        )


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
    from fraudstream.core.registry import list_versions

    for m in list_versions(settings().models_dir):
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
    from fraudstream.core.registry import list_versions, verify

    s = settings()
    names = list(versions) or [m.version for m in list_versions(s.models_dir)]
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


# --- simulate, report (train, backtest: their own modules) ---------------------------------
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(as_json: bool) -> None:
    """Per-version outcomes with 95% intervals; champion vs challenger significance.

    \b
      fraudstream report
      fraudstream report --json | jq .comparisons
    """
    from fraudstream.report import load_outcomes, render, summarise

    summary = summarise(load_outcomes(settings()))
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render(summary))


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


def _register() -> None:
    from fraudstream.backtest.cli import backtest
    from fraudstream.bench.cli import bench
    from fraudstream.train.cli import train

    main.add_command(train)
    main.add_command(backtest)
    main.add_command(bench)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
