"""confluent-kafka clients configured from Settings: one place for security and tuning."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from fraudstream.errors import BrokerError, ReadIncomplete
from fraudstream.settings import Settings

#: "end of partition" (enable.partition.eof). confluent-kafka names its client-side error codes
#: with a leading underscore; they are its public API all the same.
PARTITION_EOF: int = KafkaError._PARTITION_EOF  # noqa: SLF001
#: A partition the client's metadata does not know (yet).
UNKNOWN_PARTITION: int = KafkaError._UNKNOWN_PARTITION  # noqa: SLF001
#: A transactional producer was fenced: another producer took its transactional id.
FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}  # noqa: SLF001
)


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

    Whole or not at all: if a partition has not reached its end by ``timeout`` seconds,
    ``ReadIncomplete`` says which and what to do, instead of returning part of it.
    """
    return list(iter_committed(settings, topics, timeout=timeout, idle=idle, strict=True))


# (topic, partition) -> (low watermark, first offset read, end offset) of one read
ReadPlan = dict[tuple[str, int], tuple[int, int, int]]


def iter_committed(
    settings: Settings,
    topics: Sequence[str],
    *,
    timeout: float | None = 30.0,
    idle: float = 2.0,
    since_ms: int | None = None,
    until_ms: int | None = None,
    strict: bool = False,
    plan: ReadPlan | None = None,
    stall: float = 120.0,
) -> Iterator[Message]:
    """Yield the committed records of ``topics`` up to their end at the start of the read.

    From the beginning, or from the first record stamped at or after ``since_ms`` (broker
    timestamps, per partition); a partition ends early at its first record stamped after
    ``until_ms`` (not yielded). ``plan``, when given, is filled with where each partition was
    read from before the first record is yielded. Past ``timeout`` (None: no limit), or after
    ``stall`` seconds without a record, the read stops where it is; with ``strict`` it raises
    ReadIncomplete instead, naming the partitions behind (a report must not count a part).
    """

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
            parts = sorted(md.topics[topic].partitions)
            by_time: dict[int, int] = {}
            if since_ms is not None:
                asked = [TopicPartition(topic, p, since_ms) for p in parts]
                for tp in consumer.offsets_for_times(asked, timeout=10):
                    by_time[tp.partition] = tp.offset
            for p in parts:
                low, high = watermarks(consumer, TopicPartition(topic, p))
                start = low
                if since_ms is not None:
                    # offsets_for_times answers -1 when no record is that recent: nothing to read.
                    found = by_time.get(p, -1)
                    start = high if found < 0 else max(low, found)
                if plan is not None:
                    plan[(topic, p)] = (low, start, high)
                if high > start:
                    tps.append(TopicPartition(topic, p, start))
                    ends[(topic, p)] = high
        if not tps:
            return
        consumer.assign(tps)
        done: set[tuple[str, int]] = set()
        deadline = None if timeout is None else time.monotonic() + timeout
        last = last_record = time.monotonic()
        while len(done) < len(ends):
            now = time.monotonic()
            if (deadline is not None and now >= deadline) or now - last_record > stall:
                if strict:
                    behind = {
                        (tp.topic, tp.partition): (tp.offset, ends[(tp.topic, tp.partition)])
                        for tp in consumer.position([TopicPartition(t, p) for t, p in ends])
                        if (tp.topic, tp.partition) not in done
                    }
                    shown = ", ".join(
                        f"{t}[{p}] at {at} of {e}" for (t, p), (at, e) in behind.items()
                    )
                    raise ReadIncomplete(
                        f"Read {len(done)} of {len(ends)} partitions of {', '.join(topics)} to "
                        f"their end, not {shown} (stopped after {now - last_record:.0f} s "
                        "without a record); nothing is shown rather than part of it. The broker "
                        "did not deliver them in time (slow, overloaded or unreachable): try "
                        "again; if it persists, check the broker's health and the network to it.",
                        behind,
                    )
                return
            batch = consumer.consume(1000, 0.5)
            if not batch:
                # A transactional partition ends with a commit marker, never delivered: the
                # position moves past it to the end. Long idle: accept one offset short of it.
                slack = 1 if time.monotonic() - last > idle else 0
                positions = consumer.position([TopicPartition(t, p) for t, p in ends])
                for tp in positions:
                    if tp.offset >= ends[(tp.topic, tp.partition)] - slack:
                        done.add((tp.topic, tp.partition))
                if slack:
                    last = time.monotonic()
            for msg in batch:
                if msg.error():
                    continue
                last = last_record = time.monotonic()
                key = (str(msg.topic()), int(msg.partition() or 0))
                if key in done:
                    continue  # fetched before its partition was paused
                if until_ms is not None and msg.timestamp()[1] > until_ms:
                    done.add(key)
                    consumer.pause([TopicPartition(*key)])
                    continue
                if int(msg.offset() or 0) >= ends[key] - 1:
                    done.add(key)
                yield msg
    finally:
        consumer.close()


def produce(producer: Producer, topic: str, **kw: Any) -> None:
    """``producer.produce``, waiting while its queue is full. A partition named explicitly that
    the producer's metadata does not know yet (the topic just grew: `fraudstream topics scale`)
    is looked up once before the error is raised: librdkafka refreshes its metadata only every
    few minutes on its own."""
    refreshed = False
    while True:
        try:
            producer.produce(topic, **kw)
            return
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            unknown = exc.args[0].code() == UNKNOWN_PARTITION
            if refreshed or kw.get("partition") is None or not unknown:
                raise
            refreshed = True
            producer.list_topics(topic, timeout=10)


def fetched(consumer: Consumer, most: int, wait_s: float) -> list[Message]:
    """Wait up to ``wait_s`` for the first message, then take what else is fetched already (at
    most ``most`` in all). ``consume(most, wait_s)`` alone waits for ``most`` messages or the
    whole ``wait_s``: at a modest rate, ``wait_s`` for every record."""
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> tuple[int, int]:
    """(low, high) of one partition; retriable errors (a leader still being elected for a new
    topic, a leader moving) are retried until ``timeout``."""

    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            # librdkafka does not flag a leader change during a watermark query as retriable.
            if not (err.retriable() or err.code() in _LEADER_MOVING) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def log_start_offset(settings: Settings, topic: str, partition: int) -> int:
    """The first offset still in the partition's log: where a group without a committed offset
    starts reading (the worker's consumers reset to the earliest offset)."""
    probe = make_consumer(settings, group_id=f"{settings.app_id}-probe")
    try:
        low, _high = watermarks(probe, TopicPartition(topic, partition))
    except KafkaException as exc:
        raise BrokerError(
            f"reading where {topic!r} [{partition}] starts failed: {exc}; check that the broker "
            "is reachable"
        ) from exc
    finally:
        probe.close()
    return int(low)


class CommittedProbe:
    """Whether a read_committed reader finds a record in offsets [start, end) of a partition,
    through one long-lived consumer (thread-safe: one question at a time).

    A hole in a partition's offsets is usually a transactional writer's commit marker, so a
    reader of a transactionally written topic asks this after nearly every commit upstream.
    A consumer per question cost a connection, metadata and a fetch session each time: the
    entity aggregator spent as much CPU as the scoring worker on it (docs/benchmark.md)."""

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None

    def __call__(
        self, topic: str, partition: int, start: int, end: int, *, timeout: float = 10.0
    ) -> bool:
        with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(
                    self._s,
                    group_id=f"{self._s.app_id}-probe",
                    # One record answers: by default librdkafka prefetches up to a megabyte
                    # per partition (and 100,000 records) after each assign, decompressed and
                    # thrown away: that kept one of its threads at half a core. And a fetch
                    # still waiting at the previous partition's end (500 ms by default) would
                    # hold up the next question's first fetch.
                    **{
                        "max.partition.fetch.bytes": 1024,
                        "queued.min.messages": 1,
                        "queued.max.messages.kbytes": 1,
                        "fetch.wait.max.ms": 10,
                        "fetch.queue.backoff.ms": 0,
                    },
                )
            probe = self._consumer
            try:
                probe.assign([TopicPartition(topic, partition, start)])
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    for msg in probe.consume(1, 0.5):
                        if msg.error() is None and (msg.topic(), msg.partition()) == (
                            topic,
                            partition,
                        ):
                            return int(msg.offset() or 0) < end
                return False  # nothing readable from `start`: no record is missing there
            except KafkaException:
                self._close()  # a fresh consumer for the next question
                raise
            finally:
                if self._consumer is not None:
                    probe.unassign()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()


_probes: dict[tuple[str, frozenset[tuple[str, str]]], CommittedProbe] = {}
_probes_lock = threading.Lock()


def has_committed_records(
    settings: Settings, topic: str, partition: int, start: int, end: int, *, timeout: float = 10.0
) -> bool:
    """Whether a read_committed reader finds a record in offsets [start, end) of one partition
    (commit markers and aborted records take offsets but are not records). One probe per
    application and cluster, kept for the process's life."""
    key = (settings.app_id, frozenset(settings.kafka_client_config().items()))
    with _probes_lock:
        probe = _probes.get(key)
        if probe is None:
            probe = _probes[key] = CommittedProbe(settings)
    return probe(topic, partition, start, end, timeout=timeout)
