"""Counting what the fault suite checks: lost, duplicated and phantom decisions, and final lag.

``verify`` is pure: it takes what the producer had acknowledged, the decisions and the dead
letters, and counts. ``read_and_verify`` reads them from Kafka (from the beginning,
``read_committed``) and adds the worker group's final lag; ``wait_and_verify`` polls until the
verdict is clean or a deadline passes.

Definitions (issue 7):

- **lost**: an acknowledged transaction record with neither a decision (matched by
  ``transaction_id``) nor a dead letter (matched by ``transaction_id`` when its value still parses,
  else by its origin partition and offset).
- **duplicated**: decisions beyond the first for one ``transaction_id``.
- **phantom**: decisions for a ``transaction_id`` that was never sent.
- **final lag**: the worker group's committed offsets against the high watermarks of the topics it
  consumes (transactions, and whatever else it has committed offsets for: the join's inputs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from fraudstream.settings import Settings


@dataclass(frozen=True)
class Sent:
    """One record the producer had acknowledged. ``transaction_id`` is None when the value has
    none (bad input); ``partition``/``offset`` locate it in the transactions topic when known."""

    transaction_id: str | None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    transaction_id: str | None
    origin_partition: int | None
    origin_offset: int | None
    reason: str


@dataclass(frozen=True)
class Verdict:
    acked: int  # acknowledged records
    decisions: int  # decision records read
    decided: int  # distinct transaction ids decided
    dead_letters: int  # dead-letter records read
    lost: int
    duplicated: int
    phantom: int
    dlq_duplicated: int = 0  # one origin record dead-lettered more than once
    lag: int | None = None  # None: not measured
    lag_by_topic: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    lost_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)
    phantom_sample: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost, no phantom, and (when measured) the group has caught up."""
        return self.lost == 0 and self.phantom == 0 and (self.lag is None or self.lag == 0)


def _as_sent(item: str | Sent) -> Sent:
    return item if isinstance(item, Sent) else Sent(item)


def verify(
    acked: Iterable[str | Sent],
    decision_ids: Iterable[str],
    dead_letters: Iterable[DeadLetter] = (),
    *,
    sent_ids: Iterable[str] | None = None,
    lag: int | None = None,
    lag_by_topic: dict[str, int] | None = None,
    sample: int = 10,
) -> Verdict:
    """Count. ``sent_ids`` (every id handed to the producer, acknowledged or not) defaults to the
    acknowledged ids: a decision for an id outside it is a phantom."""
    acked_list = [_as_sent(a) for a in acked]
    counts = Counter(decision_ids)
    dls = list(dead_letters)
    dl_ids = {d.transaction_id for d in dls if d.transaction_id is not None}
    dl_origins = Counter(
        (d.origin_partition, d.origin_offset) for d in dls if d.origin_offset is not None
    )
    lost = [
        a
        for a in acked_list
        if not (
            (
                a.transaction_id is not None
                and (a.transaction_id in counts or a.transaction_id in dl_ids)
            )
            or (a.offset is not None and (a.partition, a.offset) in dl_origins)
        )
    ]
    known = (
        set(sent_ids)
        if sent_ids is not None
        else {a.transaction_id for a in acked_list if a.transaction_id is not None}
    )
    phantom = [t for t in counts if t not in known]
    dups = {t: c - 1 for t, c in counts.items() if c > 1}
    return Verdict(
        acked=len(acked_list),
        decisions=sum(counts.values()),
        decided=len(counts),
        dead_letters=len(dls),
        lost=len(lost),
        duplicated=sum(dups.values()),
        phantom=len(phantom),
        dlq_duplicated=sum(c - 1 for c in dl_origins.values() if c > 1),
        lag=lag,
        lag_by_topic=dict(lag_by_topic or {}),
        reasons=dict(Counter(d.reason for d in dls)),
        lost_sample=[str(a.transaction_id or (a.partition, a.offset)) for a in lost[:sample]],
        duplicated_sample=sorted(dups)[:sample],
        phantom_sample=sorted(phantom)[:sample],
    )


# --------------------------------------------------------------------------------------------
# Reading from Kafka


def parse_decision_id(key: bytes | None, value: bytes | None) -> str | None:
    try:
        tid = orjson.loads(value or b"").get("transaction_id")
    except (orjson.JSONDecodeError, AttributeError):
        tid = None
    if isinstance(tid, str):
        return tid
    return key.decode(errors="replace") if key else None


def parse_dead_letter(
    value: bytes | None,
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> DeadLetter:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    h = {k: v if isinstance(v, str) else (v or b"").decode(errors="replace") for k, v in pairs}
    try:
        obj = orjson.loads(value or b"")
        tid = obj.get("transaction_id") if isinstance(obj, dict) else None
    except orjson.JSONDecodeError:
        tid = None

    def _int(name: str) -> int | None:
        try:
            return int(h[name])
        except (KeyError, ValueError):
            return None

    return DeadLetter(
        tid if isinstance(tid, str) else None,
        _int("origin.partition"),
        _int("origin.offset"),
        h.get("error.class", "?"),
    )


def group_lag(
    settings: Settings, topics: Sequence[str] | None = None, group: str | None = None
) -> dict[str, int]:
    """Per topic: high watermark minus the group's committed offset (the low watermark when the
    group has committed nothing for a partition), summed over partitions.

    ``topics`` None: the transactions topic plus every other topic the group has committed
    offsets for (what its agents consume: a worker's topics vary with its roles), changelogs
    excepted."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    from fraudstream.kafka.clients import make_consumer

    group = group or settings.app_id
    admin = AdminClient({**settings.kafka_client_config(), "socket.timeout.ms": 5000})
    consumer = make_consumer(settings, group_id=f"{group}-lag-probe")
    try:
        committed: dict[tuple[str, int], int] = {}
        futures = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=10
        )
        for fut in futures.values():
            for tp in fut.result().topic_partitions or []:
                if tp.error is None and tp.offset >= 0:
                    committed[(tp.topic, tp.partition)] = tp.offset
        if topics is None:
            names = {settings.topic_transactions} | {
                t for t, _ in committed if not t.endswith("-changelog")
            }
            topics = sorted(names)
        md = consumer.list_topics(timeout=10)
        tps = [
            TopicPartition(t, p)
            for t in topics
            if t in md.topics and md.topics[t].error is None
            for p in md.topics[t].partitions
        ]
        out: dict[str, int] = dict.fromkeys(topics, 0)
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            pos = committed.get((tp.topic, tp.partition), low)
            if high > pos:
                out[tp.topic] += _records_between(settings, tp.topic, tp.partition, pos)
        return out
    finally:
        consumer.close()


def _records_between(settings: Settings, topic: str, partition: int, start: int) -> int:
    """Records a read_committed reader still gets from ``start`` to the end: a transactional
    topic's commit markers take offsets too, and are not lag."""
    from confluent_kafka import TopicPartition

    from fraudstream.kafka.clients import PARTITION_EOF, make_consumer

    consumer = make_consumer(
        settings, group_id=f"{settings.app_id}-lag-probe", **{"enable.partition.eof": True}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        n = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is None:
                    n += 1
                elif err.code() == PARTITION_EOF:
                    return n
        return n
    finally:
        consumer.close()


def read_and_verify(
    settings: Settings,
    acked: Iterable[str | Sent],
    *,
    sent_ids: Iterable[str] | None = None,
) -> tuple[Verdict, list[tuple[str, float]]]:
    """Read decisions and dead letters from the beginning; count; measure the group's lag.
    Also returns (transaction_id, broker timestamp in seconds) of every decision, in log order
    per partition, for recovery-time measurements."""
    from fraudstream.kafka.clients import read_all

    msgs = read_all(settings, [settings.topic_decisions, settings.topic_dlq], timeout=60)
    ids: list[str] = []
    stamped: list[tuple[str, float]] = []
    dls: list[DeadLetter] = []
    for m in msgs:
        if m.topic() == settings.topic_decisions:
            tid = parse_decision_id(m.key(), m.value())
            if tid is not None:
                ids.append(tid)
                stamped.append((tid, (m.timestamp()[1] or 0) / 1000.0))
        else:
            dls.append(parse_dead_letter(m.value(), m.headers()))
    lag = group_lag(settings)
    verdict = verify(acked, ids, dls, sent_ids=sent_ids, lag=sum(lag.values()), lag_by_topic=lag)
    return verdict, stamped


def wait_and_verify(
    settings: Settings,
    acked: Sequence[str | Sent],
    *,
    timeout: float = 120.0,
    sent_ids: Iterable[str] | None = None,
) -> tuple[Verdict, list[tuple[str, float]], float]:
    """Poll ``read_and_verify`` until clean (nothing lost, no phantom, lag 0) or ``timeout``.
    Returns the last verdict, the decision timestamps, and the seconds it took."""
    sent = list(sent_ids) if sent_ids is not None else None
    t0 = time.monotonic()
    while True:
        verdict, stamped = read_and_verify(settings, acked, sent_ids=sent)
        if verdict.clean or time.monotonic() - t0 >= timeout:
            return verdict, stamped, time.monotonic() - t0
        time.sleep(1.0)
