"""Topic administration: create the contract's topics, describe them, raise partitions together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from fraudstream.errors import BrokerError
from fraudstream.settings import Settings

# Faust names its table changelogs "<app id>-<table>-changelog"; these tables are ours.
CARD_TABLES = ("card-state",)
JOIN_TABLES = ("decision-join", "version-metrics", "held-labels")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    copartitioned: bool  # must keep the same partition count as `transactions`


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    compact = {"cleanup.policy": "compact"}
    week = {"retention.ms": str(7 * 24 * 3600 * 1000)}
    # Labels arrive up to FRAUD_DECISION_RETENTION_DAYS after their decision, and each one writes
    # or replaces an outcome: what `report` reads must live as long (the broker default is 7 days).
    horizon = {"retention.ms": str(round(settings.decision_retention_days * 24 * 3600 * 1000))}
    specs = [
        TopicSpec(settings.topic_transactions, n, week, True),
        TopicSpec(settings.topic_dlq, n, {"retention.ms": str(30 * 24 * 3600 * 1000)}, True),
        TopicSpec(settings.topic_decisions, n, week, True),
        TopicSpec(settings.topic_scores, n, week, True),
        TopicSpec(settings.topic_feedback, n, {"retention.ms": "-1"}, True),
        # Transactions moved to their card's partition (fraudstream.app.scoring): as `transactions`.
        TopicSpec(settings.topic_transactions_repartition, n, week, True),
        # Labels moved to their decision's partition (fraudstream.app.mover): joined within
        # seconds, kept as long as a label can still change an outcome.
        TopicSpec(settings.topic_feedback_repartition, n, horizon, True),
        TopicSpec(settings.topic_feedback_dlq, n, horizon, True),
        TopicSpec(settings.topic_outcomes, n, horizon, True),
        TopicSpec(settings.topic_false_positives, n, horizon, True),
        TopicSpec(settings.topic_false_negatives, n, horizon, True),
        TopicSpec(settings.topic_control, 1, compact, False),
        TopicSpec(settings.topic_metrics, 1, compact, False),
    ]
    for table in (*CARD_TABLES, *JOIN_TABLES):
        specs.append(TopicSpec(changelog_topic(settings, table), n, compact, True))
    # Entity state (docs/entity-state.md): events keyed by entity, and the aggregator's state,
    # compacted, which every scoring worker reads whole; aggregator partition p keeps its states
    # in partition p of the state topic. Not scaled with `transactions`: an entity's events
    # would go to another partition than its state (the state would split in two).
    specs.append(TopicSpec(entity_events_topic(settings), n, week, False))
    specs.append(TopicSpec(entity_state_topic(settings), n, compact, False))
    return specs


def entity_events_topic(settings: Settings) -> str:
    return f"{settings.app_id}-entity-events"


def entity_state_topic(settings: Settings) -> str:
    return f"{settings.app_id}-entity-state"


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({**settings.kafka_client_config(), "socket.timeout.ms": 5000})


def existing_partitions(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(
            f"Cannot reach Kafka at the configured bootstrap address ({exc}). Start one with "
            "`fraudstream broker start`, or set FRAUD_KAFKA_BOOTSTRAP."
        ) from exc
    return {name: len(t.partitions) for name, t in md.topics.items()}


def create_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create every missing topic; return the names created. Existing topics are left alone."""
    admin = admin_client(settings)
    have = existing_partitions(admin)
    wanted = [s for s in topic_specs(settings) if s.name not in have]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, s.partitions, settings.replication_factor, config=dict(s.config))
            for s in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"Could not create topic {name}: {exc}") from exc
    _wait_until_listed(admin, {s.name: s.partitions for s in wanted}, timeout)
    return sorted(created)


def _wait_until_listed(admin: AdminClient, wanted: dict[str, int], timeout: float) -> None:
    """Until the metadata lists every topic with all its partitions led: the controller answers
    "created" before every broker's metadata has the topic, and a busy broker lists new topics
    late; a worker or test started right after would see them missing."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        missing = [
            name
            for name, partitions in wanted.items()
            if name not in md.topics
            or len(md.topics[name].partitions) < partitions
            or any(p.leader < 0 for p in md.topics[name].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"Topics {', '.join(sorted(missing))} were created but are still not listed with "
                f"a leader for every partition after {timeout:.0f} s; check the broker's health "
                "(`fraudstream topics describe`) and run `fraudstream topics create` again."
            )
        time.sleep(0.2)


@dataclass(frozen=True)
class ConfigChange:
    topic: str
    key: str
    before: str | None
    after: str


def config_drift(
    settings: Settings, admin: AdminClient | None = None, *, skip: Sequence[str] = ()
) -> list[ConfigChange]:
    """Settings of existing topics (but ``skip``) that differ from what this release creates
    them with."""
    admin = admin or admin_client(settings)
    have = existing_partitions(admin)
    specs = [s for s in topic_specs(settings) if s.name in have and s.config and s.name not in skip]
    if not specs:
        return []
    futures = admin.describe_configs([ConfigResource("topic", s.name) for s in specs])
    current: dict[str, dict[str, str | None]] = {}
    for resource, fut in futures.items():
        try:
            entries = fut.result()
        except KafkaException as exc:
            raise BrokerError(
                f"Could not read the configuration of {resource.name}: {exc}"
            ) from exc
        current[resource.name] = {k: e.value for k, e in entries.items()}
    return [
        ConfigChange(spec.name, key, current[spec.name].get(key), want)
        for spec in specs
        for key, want in spec.config.items()
        if current[spec.name].get(key) != want
    ]


def upgrade_topics(settings: Settings) -> tuple[list[str], list[ConfigChange]]:
    """Bring a cluster made by an earlier release up to this one: create missing topics, and
    alter the settings of existing ones that differ (e.g. the outcome topics' retention, now
    the decision-retention horizon). Partition counts are `scale`'s business. Idempotent."""
    created = create_topics(settings)
    admin = admin_client(settings)
    changes = config_drift(settings, admin, skip=created)  # those were created as specified
    by_topic: dict[str, list[ConfigChange]] = {}
    for c in changes:
        by_topic.setdefault(c.topic, []).append(c)
    if by_topic:
        resources = [
            ConfigResource(
                "topic",
                topic,
                incremental_configs=[
                    ConfigEntry(c.key, c.after, incremental_operation=AlterConfigOpType.SET)
                    for c in items
                ],
            )
            for topic, items in by_topic.items()
        ]
        for resource, fut in admin.incremental_alter_configs(resources).items():
            try:
                fut.result()
            except KafkaException as exc:
                raise BrokerError(
                    f"Could not alter the configuration of {resource.name}: {exc}"
                ) from exc
    return created, changes


def describe_topics(settings: Settings) -> list[tuple[str, int | None, int]]:
    """(topic, partitions or None when missing, wanted partitions) for every topic we use."""
    have = existing_partitions(admin_client(settings))
    return [(s.name, have.get(s.name), s.partitions) for s in topic_specs(settings)]


def scale_partitions(settings: Settings, partitions: int) -> list[tuple[str, int, int]]:
    """Raise `transactions` and every topic co-partitioned with it to ``partitions``.

    Refuses to shrink (Kafka cannot, and per-card state would be misplaced). Returns
    (topic, before, after) for each topic changed.
    """
    admin = admin_client(settings)
    have = existing_partitions(admin)
    group = [s for s in topic_specs(settings) if s.copartitioned and s.name in have]
    current = max((have[s.name] for s in group), default=0)
    if partitions < current:
        raise BrokerError(
            f"Refusing to shrink from {current} to {partitions} partitions: Kafka cannot remove "
            "partitions, and per-card state is placed by partition. Create new topics instead."
        )
    changes = [(s.name, have[s.name], partitions) for s in group if have[s.name] < partitions]
    if not changes:
        return []
    futures = admin.create_partitions([NewPartitions(name, after) for name, _, after in changes])
    for name, fut in futures.items():
        try:
            fut.result()
        except KafkaException as exc:
            raise BrokerError(f"Could not add partitions to {name}: {exc}") from exc
    return changes
