"""A partition's committed state and position, read back when it is opened (exactly once:
``kafka/txn.py``; at least once: ``kafka/alo.py``): every committed record of its changelog
partition (read_committed), and where its input is read from."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, TopicPartition

from fraudstream.coordinator.ports import Restored
from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import (
    PARTITION_EOF,
    log_start_offset,
    make_consumer,
    watermarks,
)
from fraudstream.kafka.groupoffsets import group_committed_offsets
from fraudstream.settings import Settings


def restore_partition(
    settings: Settings, topic: str, partition: int, *, timeout: float = 300.0
) -> list[tuple[bytes, bytes | None]]:
    """Every committed (key, value) of one changelog partition, in log order."""
    consumer = make_consumer(
        settings,
        group_id=f"{settings.app_id}-restore",
        **{"enable.partition.eof": True, "isolation.level": "read_committed"},
    )
    try:
        tp = TopicPartition(topic, partition)
        try:
            # A topic created a moment ago may not have its leader known yet: retried.
            low, high = watermarks(consumer, tp)
        except KafkaException as exc:
            raise BrokerError(
                f"Cannot read the state changelog {topic!r} [{partition}]: {exc}. Create "
                "the topics with `fraudstream topics create`."
            ) from exc
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, low)])
        out: list[tuple[bytes, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == PARTITION_EOF:
                        return out
                    raise BrokerError(f"restoring {topic!r} [{partition}] failed: {err.str()}")
                key = msg.key()
                if key is not None:
                    out.append((key, msg.value()))
        raise BrokerError(
            f"restoring {topic!r} [{partition}] did not finish in {timeout:.0f}s "
            f"({len(out)} records read): check the broker's health"
        )
    finally:
        consumer.close()


def committed_offset(
    settings: Settings, topic: str, partition: int, group_id: str | None = None
) -> int | None:
    group = group_id or settings.app_id
    got = group_committed_offsets(settings, group, [(topic, partition)])
    return got.get((topic, partition))


def read_partition(
    settings: Settings,
    changelog_topic: str | None,
    input_topic: str,
    partition: int,
    group_id: str | None = None,
) -> tuple[Restored, int | None]:
    """A partition's committed state records (none without a changelog) and where to start
    reading it: the group's committed offset, or the log's start without one; and the
    committed offset itself."""
    state = (
        [] if changelog_topic is None else restore_partition(settings, changelog_topic, partition)
    )
    committed = committed_offset(settings, input_topic, partition, group_id)
    # Never committed: the group reads it from its start (auto.offset.reset=earliest). Saying
    # so lets the coordinator see a hole before the first record delivered: records fetched
    # while Faust's flow was stopped are dropped, and only partitions with a committed offset
    # are sought back to it.
    start = (
        committed if committed is not None else log_start_offset(settings, input_topic, partition)
    )
    return Restored(state, start), committed
