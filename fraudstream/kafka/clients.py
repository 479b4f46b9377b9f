"""confluent-kafka clients configured from Settings: one place for security and tuning."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from fraudstream.errors import BrokerError, ReadIncomplete
from fraudstream.settings import Settings


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    conf: dict[str, Any] = {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        # Java's default partitioner: the Python/Faust side (aiokafka) uses the same murmur2,
        # so a key lands in the same partition whoever writes it (the feedback join needs that).
        "partitioner": "murmur2_random",
        **overrides,
    }
    return Producer(conf)


def make_consumer(settings: Settings, group_id: str | None = None, **overrides: Any) -> Consumer:
    conf: dict[str, Any] = {
        **settings.kafka_client_config(),
        "group.id": group_id or "fraudstream-tools",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        **overrides,
    }
    return Consumer(conf)


class DeliveryTracker:
    """Counts outstanding produces and remembers the first delivery failure."""

    def __init__(self) -> None:
        self.failed: KafkaError | None = None
        self._lock = threading.Lock()
        self.delivered = 0

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is not None and self.failed is None:
                self.failed = err
            elif err is None:
                self.delivered += 1

    def raise_if_failed(self) -> None:
        if self.failed is not None:
            raise BrokerError(f"Kafka refused a record: {self.failed}")


def read_all(
    settings: Settings,
    topics: Sequence[str],
    *,
    timeout: float = 30.0,
    idle: float = 2.0,
) -> list[Message]:
    """Read every committed record of ``topics`` from the beginning, up to their current end.

    Whole or not at all: if a partition has not reached its end offset by ``timeout`` seconds,
    ``ReadIncomplete`` says which and what to do, instead of returning part of it.
    """
    import time

    consumer = make_consumer(settings, group_id="fraudstream-reader")
    try:
        md = consumer.list_topics(timeout=10)
        tps: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            if topic not in md.topics or md.topics[topic].error is not None:
                raise BrokerError(
                    f"Topic {topic!r} does not exist. Create the topics with "
                    "`fraudstream topics create`."
                )
            for p in md.topics[topic].partitions:
                low, high = _watermarks(consumer, TopicPartition(topic, p))
                if high > low:
                    tps.append(TopicPartition(topic, p, low))
                    ends[(topic, p)] = high
        if not tps:
            return []
        consumer.assign(tps)
        out: list[Message] = []
        done: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while len(done) < len(ends) and time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            if not batch and time.monotonic() - last > idle:
                # read_committed stops before aborted/open transactions' markers: check position.
                positions = consumer.position([TopicPartition(t, p) for t, p in ends])
                for tp in positions:
                    if tp.offset >= ends[(tp.topic, tp.partition)] - 1:
                        done.add((tp.topic, tp.partition))
                last = time.monotonic()
            for msg in batch:
                if msg.error():
                    continue
                last = time.monotonic()
                out.append(msg)
                key = (str(msg.topic()), int(msg.partition() or 0))
                if int(msg.offset() or 0) >= ends[key] - 1:
                    done.add(key)
        if len(done) < len(ends):
            behind = {
                (tp.topic, tp.partition): (tp.offset, ends[(tp.topic, tp.partition)])
                for tp in consumer.position([TopicPartition(t, p) for t, p in ends])
                if (tp.topic, tp.partition) not in done
            }
            shown = ", ".join(f"{t}[{p}] at {at} of {end}" for (t, p), (at, end) in behind.items())
            raise ReadIncomplete(
                f"Read {len(out)} records of {', '.join(topics)} in {timeout:.0f} s, but not "
                f"to the end of every partition ({shown}); nothing is shown rather than part "
                "of it. The broker did not deliver them in time (slow, overloaded or "
                "unreachable): try again; if it persists, check the broker's health and the "
                "network to it.",
                behind,
            )
        return out
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> tuple[int, int]:
    """(low, high) of one partition; retriable errors (a leader still being elected for a new
    topic, a leader moving) are retried until ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def has_committed_records(
    settings: Settings, topic: str, partition: int, start: int, end: int, *, timeout: float = 10.0
) -> bool:
    """Whether a read_committed reader finds a record in offsets [start, end) of one partition
    (commit markers and aborted records take offsets but are not records)."""
    import time

    probe = make_consumer(settings, group_id=f"{settings.app_id}-probe")
    try:
        probe.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in probe.consume(1, 0.5):
                if msg.error() is None:
                    return int(msg.offset() or 0) < end
        return False  # nothing readable from `start`: no record is missing there
    finally:
        probe.close()


def group_committed_offsets(
    settings: Settings, group_id: str, tps: list[tuple[str, int]], *, timeout: float = 10.0
) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets (None where it has none), read without joining it.

    Through the admin API on purpose: a short-lived consumer carrying the worker's own group id
    (what ``Consumer.committed`` needs) was measured to slow the worker's read_committed
    fetches to about one per second for the rest of its life (librdkafka 2.12, Kafka 4.1)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**settings.kafka_client_config(), "socket.timeout.ms": 5000})
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p) for t, p in tps])
    try:
        futures = admin.list_consumer_group_offsets(
            [request], require_stable=True, request_timeout=timeout
        )
        got = futures[group_id].result(timeout)
    except (KafkaException, TimeoutError) as exc:
        raise BrokerError(
            f"reading group {group_id!r}'s committed offsets failed: {exc or 'timed out'}; "
            "check that the broker is reachable"
        ) from exc
    return {
        (str(tp.topic), int(tp.partition)): (int(tp.offset) if tp.offset >= 0 else None)
        for tp in got.topic_partitions or []
    }
