"""The Faust application: its topics and tables, built from Settings, with the Faust boundary's
subclasses in place (``fraudstream.app.faust_boundary``). What runs on it is put together in
``fraudstream.app.wiring``."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import faust

from fraudstream.app import faust_boundary
from fraudstream.kafka.admin import entity_events_topic
from fraudstream.settings import Settings

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


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
class FaustApp:
    """The Faust app and what it reads and keeps (Faust topic and table objects)."""

    app: faust.App
    hooks: faust_boundary.Hooks
    transactions: Any
    entity_events: Any  # the aggregator's input (docs/entity-state.md)
    join_inputs: Any  # decisions, feedback, moved feedback (decisions carry their shadow score)
    join_records: Any  # transaction_id -> join record
    join_counts: Any  # partition|version|variant -> confusion counts
    held_labels: Any  # transaction_id -> a label waiting for its decision


def create_app(settings: Settings) -> FaustApp:
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
        web_tables_enabled=False,  # never expose state over HTTP
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        stream_buffer_maxsize=8192,
        broker_max_poll_records=2000,
        table_standby_replicas=0,
        logging_config=None,
    )
    hooks = faust_boundary.Hooks(fetch_min_bytes=settings.fetch_min_bytes)
    faust_boundary.install(app, hooks)
    transactions = app.topic(
        settings.topic_transactions, partitions=settings.partitions, allow_empty=True, **RAW
    )
    entity_events = app.topic(
        entity_events_topic(settings), partitions=settings.partitions, allow_empty=True, **RAW
    )
    join_inputs = app.topic(
        settings.topic_decisions,
        settings.topic_feedback,
        settings.topic_feedback_repartition,  # labels moved to their decision's partition
        allow_empty=True,
        **RAW,
    )
    # bytes keys and values: Faust stores them raw; the core owns the encoding. Per-card state
    # is not a Faust table: it lives in the scoring transactions (fraudstream.kafka.txn).
    table: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "partitions": settings.partitions,
    }
    join_records = app.Table("decision-join", **table)
    join_counts = app.Table("version-metrics", **table)
    held_labels = app.Table("held-labels", **table)
    return FaustApp(
        app, hooks, transactions, entity_events, join_inputs, join_records, join_counts, held_labels
    )
