"""The Faust application: topics, tables, agents and web pages, built from Settings.

Wiring only. Decoding, features, routing, scoring, policy and the feedback join live in
``fraudstream.core``; the agents call them and send what they return.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event

from fraudstream.app.serving import ServingManager
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.app")


@contextlib.contextmanager
def bind_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event while touching a table.

    Faust writes a table key's changelog record (and picks its RocksDB partition) from the
    *current* event. In a ``take_events`` batch that is the last event buffered, which may belong
    to another partition; binding each card's own event keeps state next to its transactions.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def faust_credentials(settings: Settings) -> Any:
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = None
    if proto in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if proto == "SSL":
        return faust.SSLCredentials(ctx)
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username or "",
        password=password,
        ssl_context=ctx,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
    )


@dataclass
class FraudApp:
    app: faust.App
    settings: Settings
    serving: ServingManager
    transactions: Any
    join_table: Any
    metrics_table: Any
    held_table: Any
    output: Any = None
    writers: Any = None
    tx_handler: Any = None
    join_handler: Any = None


# The longest the broker may hold an empty fetch of the worker's Faust consumer (see below).
FETCH_MAX_WAIT_MS = 20


def configure_worker_consumer(fetch_min_bytes: int = 1) -> None:
    """Faust reads with ``read_committed`` only in its own exactly-once mode, which we do not
    use (it ties a transaction to the *output* partition). The join reads decisions written
    in the scoring path's transactions, and must never see an aborted one. It also shortens
    how long the broker may hold a fetch (see ``FETCH_MAX_WAIT_MS``) and how many bytes it
    waits for (``FRAUD_FETCH_MIN_BYTES``)."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    cls._fraudstream_fetch_min_bytes = fetch_min_bytes  # type: ignore[attr-defined]
    if getattr(cls, "_fraudstream_configured", False):
        return
    create = cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._isolation_level = "read_committed"  # read by AIOKafkaConsumer.start()
        # Faust asks the broker to hold a fetch for up to 1.5 s, and aiokafka keeps one fetch
        # in flight per broker, leaving out partitions whose records are still buffered. When
        # every `transactions` partition had records buffered, the next fetch held only the
        # tables' idle changelog partitions, and the broker held it for the full 1.5 s while
        # new transactions waited behind it: a standing ~1.5 s lag at 1,000/s with the worker
        # half idle (docs/benchmark.md). A short hold bounds that wait.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._fetch_min_bytes = cls._fraudstream_fetch_min_bytes  # type: ignore[attr-defined]
        return consumer

    cls._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    cls._fraudstream_configured = True  # type: ignore[attr-defined]


def keep_refetched_records(app: faust.App) -> None:
    """Faust clears every stream buffer when its flow control resumes after a rebalance. But
    it resumes *after* seeking the partitions to their committed offsets, and records fetched
    from there in between were dropped with the stale ones: never decided, never acked, and
    the join's committed offset then stuck behind the hole for good. The revocation already
    clears the buffers (faust.app.base ``_on_partitions_revoked``); resuming only resumes."""
    flow = app.flow_control

    def resume_without_clearing() -> None:
        flow._suspend.clear()
        flow._resume.set()

    flow.resume = resume_without_clearing  # type: ignore[method-assign]


def create_app(
    settings: Settings, serving: ServingManager, output: Any = None, writers: Any = None
) -> FraudApp:
    """Build the app. ``output`` and ``writers`` replace the Kafka producers (agent tests)."""
    configure_worker_consumer(settings.fetch_min_bytes)
    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    brokers = [f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",") if b.strip()]
    app = faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(settings),
        store=settings.table_store,
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # the listen address; web_host only names the URL
        canonical_url=settings.web_url or f"http://{settings.web_host}:{settings.web_port}",
        web_port=settings.web_port,
        web_router_enabled=False,
        web_tables_enabled=False,  # never expose card state over HTTP
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        stream_buffer_maxsize=8192,
        broker_max_poll_records=2000,
        table_standby_replicas=0,
        logging_config=None,
    )
    keep_refetched_records(app)
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    transactions = app.topic(
        settings.topic_transactions, partitions=settings.partitions, allow_empty=True, **raw
    )
    # bytes keys and values: Faust stores them raw; the core owns the encoding.
    table: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "partitions": settings.partitions,
    }
    # Per-card state is not a Faust table: it lives in the scoring path's Kafka transactions
    # (fraudstream.core.cardstore, fraudstream.kafka.txn), in the same changelog topic name.
    join_table = app.Table("decision-join", **table)
    metrics_table = app.Table("version-metrics", **table)
    held_table = app.Table("held-labels", **table)
    fa = FraudApp(app, settings, serving, transactions, join_table, metrics_table, held_table)

    from fraudstream.app import agents, web

    agents.install(fa, output, writers)
    web.install(fa)
    return fa
