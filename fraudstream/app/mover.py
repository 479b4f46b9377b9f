"""Labels moved to their decision's partition: the feedback repartition, exactly once.

The join finds a decision only in the partition its ``transaction_id`` hashes to by murmur2
(Kafka's default partitioner, which the worker's producers use). A label published with another
partitioner (librdkafka's default, CRC32: kcat, confluent-kafka for Python, Go and .NET) lands
elsewhere. The mover reads ``fraud.feedback`` beside the join and writes each such label,
untouched, to ``<app id>-feedback-repartition``, keyed by its transaction id (so murmur2 puts it
in its decision's partition), which the join reads too. A label already in the right partition
is left to the join: it takes no extra hop.

Exactly once: the mover is a ``Coordinator`` over ``fraud.feedback`` with a stateless handler
(``MoveHandler``); a partition's moves and its input offset commit in one Kafka transaction
(transactional id ``<app id>-feedback-move-<p>``), in the offsets of the group
``<app id>-feedback-move`` (the worker's own group holds the join's offsets for the same
partitions). Its records come from a consumer of its own (``MoverFeed``), assigned the partitions
the coordinator holds, which are the feedback partitions Faust's group gives this worker: a new
owner's transactional id fences the previous one before it reads the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fraudstream.app import metrics
from fraudstream.app.supervisor import Supervisor
from fraudstream.coordinator import ports
from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.core.records import Record
from fraudstream.kafka.clients import has_committed_records, make_consumer
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.mover")

#: The most records the mover's consumer returns at a time, and how long it waits for one.
READ_BATCH, READ_WAIT_S = 500, 0.1


def transaction_key(value: bytes | None) -> bytes | None:
    """The label's ``transaction_id`` (its contract key), or None if it cannot be read (the
    join dead-letters such a label where it lies, with the reason)."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    tid = doc.get("transaction_id") if isinstance(doc, dict) else None
    return tid.encode() if isinstance(tid, str) and tid else None


def home(key: bytes, partitions: int) -> int:
    """The partition murmur2 (Kafka's default partitioner) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def misplaced(rec: Record, partitions: int | None) -> bytes | None:
    """The transaction id of a label that is not in its decision's partition, else None."""
    key = transaction_key(rec.value)
    if key is None or not partitions or home(key, partitions) == rec.partition:
        return None
    return key


class MoveHandler:
    """The mover's ``ports.PartitionHandler``: no state; a misplaced label becomes one send."""

    def __init__(self, target: str, partitions: Callable[[], int | None]) -> None:
        self.target = target
        self.partitions = partitions
        self._pending: dict[int, int] = {}  # moves in each open transaction, for the metric

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        self._pending[partition] = 0
        return 0

    def admit(self, record: Record) -> bool:
        return True

    def step(self, records: Sequence[Record]) -> ports.Handled[bool]:
        out: ports.Handled[bool] = ports.Handled()
        for rec in records:
            key = misplaced(rec, self.partitions())
            if key is not None:
                origin = [
                    ("origin.topic", rec.topic.encode()),
                    ("origin.partition", str(rec.partition).encode()),
                    ("origin.offset", str(rec.offset).encode()),
                ]
                out.sends.append(ports.Send(rec.partition, self.target, key, rec.value, origin))
                self._pending[rec.partition] = self._pending.get(rec.partition, 0) + 1
            out.results.append(key is not None)
        return out

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        return []

    def committed(self, partition: int) -> None:
        metrics.FEEDBACK_MOVED.inc(self._pending.get(partition, 0))
        self._pending[partition] = 0

    def aborted(self, partition: int) -> None:
        self._pending[partition] = 0  # decided again: counted when that commits

    def drop(self, partition: int) -> None:
        self._pending.pop(partition, None)


class MoverFeed:
    """The mover's input (``ports.Source``): a consumer of its own, assigned (no group) the
    partitions the coordinator holds, from their committed positions. Every call on it runs on
    one thread (librdkafka consumers are not to be shared across threads)."""

    def __init__(self, settings: Settings, held_by_group: Callable[[int], bool]) -> None:
        self.s = settings
        self.topic = settings.topic_feedback
        self._held_by_group = held_by_group
        self._seeks: dict[int, int] = {}
        self._reading: set[int] = set()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fraudstream-mover")

    def assigned(self, partition: int) -> bool:
        return self._held_by_group(partition)

    async def seek(self, partition: int, offset: int) -> None:
        self._seeks[partition] = offset  # applied before the next read

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        found: bool = await asyncio.get_running_loop().run_in_executor(
            None, has_committed_records, self.s, self.topic, partition, start, end
        )
        return found

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def run(self, coordinator: Coordinator[bool]) -> None:
        """Read the held partitions and hand their records to the coordinator, for ever."""
        group = f"{self.s.app_id}-feedback-move"
        consumer: Consumer = await self._call(make_consumer, self.s, group)
        try:
            while True:
                wanted = {p: coordinator.position(p) for p in list(coordinator.partitions)}
                seeks, self._seeks = self._seeks, {}
                await self._call(self._follow, consumer, wanted, seeks)
                if not self._reading:
                    await asyncio.sleep(READ_WAIT_S)
                    continue
                got = await self._call(consumer.consume, READ_BATCH, READ_WAIT_S)
                records = []
                for msg in got:
                    err = msg.error()
                    if err is not None:
                        log.warning("reading %s: %s", self.topic, err.str())
                        continue
                    ts = msg.timestamp()[1]
                    records.append(
                        Record(
                            self.topic,
                            int(msg.partition() or 0),
                            int(msg.offset() or 0),
                            msg.key(),
                            msg.value(),
                            None if ts < 0 else ts / 1000.0,
                        )
                    )
                if records:
                    await coordinator.handle(records)
        finally:
            await self._call(consumer.close)
            self._thread.shutdown(wait=False)

    def _follow(
        self, consumer: Consumer, wanted: dict[int, int | None], seeks: dict[int, int]
    ) -> None:
        """Assign the partitions the coordinator holds (from their next offsets, or where it
        sought to), and let go of the others."""
        gone = [p for p in self._reading if p not in wanted]
        if gone:
            consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
            self._reading.difference_update(gone)
        for p, nxt in wanted.items():
            start = seeks.get(p)
            if p in self._reading and start is None:
                continue
            if p in self._reading:
                consumer.incremental_unassign([TopicPartition(self.topic, p)])
            if start is None:
                start = OFFSET_BEGINNING if nxt is None else nxt
            consumer.incremental_assign([TopicPartition(self.topic, p, start)])
            self._reading.add(p)


class MoverObserver:
    """The mover's coordinator's work as log lines and the shared transaction metrics."""

    def opened(self, partition: int, restored: int, seconds: float) -> None:
        log.info(
            "feedback partition %d: moving misplaced labels (opened in %.2fs)", partition, seconds
        )

    def let_go(self, partition: int) -> None:
        log.info("feedback partition %d: given away", partition)

    def committed(self, partitions: Sequence[int], events: int, seconds: float) -> None:
        pass

    def aborted(self, partitions: Sequence[int]) -> None:
        metrics.TXN_ABORTS.inc(len(partitions))

    def refetched(self, partition: int, start: int, end: int) -> None:
        metrics.REFETCHES.inc()

    def skipped(self, partition: int, offsets: Sequence[int]) -> None:
        pass  # the partition's new owner moves them

    def redelivered(self, partition: int, count: int) -> None:
        pass


def install(
    app: Any,
    s: Settings,
    supervisor: Supervisor,
    partitions: Callable[[], int | None],
    held_by_group: Callable[[int], bool],
    clock: ports.Clock,
) -> Coordinator[bool]:
    """The mover on a Faust app: its coordinator, reader task, commit timer and rebalance hook.
    ``partitions()``: the decisions topic's partition count (where the join looks for a
    decision); ``held_by_group(p)``: whether Faust's group gives feedback partition p to this
    worker."""
    from fraudstream.kafka.txn import TransactionalWriters

    feed = MoverFeed(s, held_by_group)
    coordinator: Coordinator[bool] = Coordinator(
        handler=MoveHandler(s.topic_feedback_repartition, partitions),
        writers=TransactionalWriters(
            s,
            None,
            input_topic=s.topic_feedback,
            role="feedback-move",
            group_id=f"{s.app_id}-feedback-move",
        ),
        source=feed,
        observer=MoverObserver(),
        spawn=supervisor.spawn,
        fence=supervisor.check,
        clock=clock,
        commit_interval_s=s.commit_interval_ms / 1000.0,
    )

    async def read() -> None:
        await supervisor.guard(feed.run(coordinator))

    async def commit_due() -> None:
        await supervisor.guard(coordinator.commit_due())

    async def on_assigned(_sender: Any, assigned: Any, **_kw: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == s.topic_feedback}
        await supervisor.guard(coordinator.on_assigned(mine))

    app.task(read)
    app.timer(interval=max(0.1, coordinator.interval_s))(commit_due)
    app.on_partitions_assigned.connect(on_assigned)
    return coordinator
