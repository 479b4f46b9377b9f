"""``fraudstream broker …``, ``topics …`` and ``tail``: the local broker, the contract's topics,
and following a topic."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fraudstream.settings import get_settings

BROKER_HOME = Path(".fraudstream/broker")


# --- broker ----------------------------------------------------------------------------------
@click.group()
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
    if info.bootstrap != get_settings().kafka_bootstrap.replace("localhost", "127.0.0.1"):
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
@click.group()
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

    created = create_topics(get_settings())
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

    created, changes = upgrade_topics(get_settings())
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

    s = get_settings()
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

    changes = scale_partitions(get_settings(), partitions)
    for name, before, after in changes:
        click.echo(f"{name}: {before} -> {after}")
    if not changes:
        click.echo(f"nothing to do: topics already have {partitions} partitions")
    else:
        click.echo(
            "note: cards that now hash to a new partition start with fresh per-card state "
            "there; restart workers one at a time if they do not pick up the new partitions."
        )


# --- tail ------------------------------------------------------------------------------------
@click.command()
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

    follow(get_settings(), topic, from_beginning, max_messages, timeout, click.echo)
