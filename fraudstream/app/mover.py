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

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from fraudstream.app import metrics
from fraudstream.app.observers import MoverObserver
from fraudstream.app.partitioning import home
from fraudstream.app.reader import AssignedReader, Wanted
from fraudstream.app.supervisor import Supervisor
from fraudstream.coordinator import ports
from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.core.records import Record
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.mover")


def transaction_key(value: bytes | None) -> bytes | None:
    """The label's ``transaction_id`` (its contract key), or None if it cannot be read (the
    join dead-letters such a label where it lies, with the reason)."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    tid = doc.get("transaction_id") if isinstance(doc, dict) else None
    return tid.encode() if isinstance(tid, str) and tid else None


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

    def owed(self, partition: int) -> list[ports.Send]:
        return []

    def committed(self, partition: int) -> None:
        metrics.FEEDBACK_MOVED.inc(self._pending.get(partition, 0))
        self._pending[partition] = 0

    def aborted(self, partition: int) -> None:
        self._pending[partition] = 0  # decided again: counted when that commits

    def drop(self, partition: int) -> None:
        self._pending.pop(partition, None)


class MoverFeed(AssignedReader):
    """The mover's input (``ports.Source``): ``fraud.feedback`` read from the coordinator's
    positions, the partitions Faust's group gives this worker."""

    def __init__(self, settings: Settings, held_by_group: Callable[[int], bool]) -> None:
        self._held_by_group = held_by_group
        self.coordinator: Coordinator[bool] | None = None
        super().__init__(
            settings,
            settings.topic_feedback,
            f"{settings.app_id}-feedback-move",
            self._positions,
            self._handle,
            report_lag=False,  # the join's lag on fraud.feedback is reported by Faust's consumer
        )

    def assigned(self, partition: int) -> bool:
        return self._held_by_group(partition)

    def _positions(self) -> Wanted:
        c = self.coordinator
        if c is None:
            return {}
        return {p: (st, st.next_offset) for p, st in list(c.partitions.items())}

    async def _handle(self, records: list[Record]) -> None:
        assert self.coordinator is not None
        await self.coordinator.handle(records)


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
            fence=supervisor.check,
        ),
        source=feed,
        observer=MoverObserver(),
        spawn=supervisor.spawn,
        fence=supervisor.check,
        clock=clock,
        commit_interval_s=s.commit_interval_ms / 1000.0,
    )

    feed.coordinator = coordinator

    async def read() -> None:
        await supervisor.guard(feed.run())

    async def commit_due() -> None:
        await supervisor.guard(coordinator.commit_due())

    async def on_assigned(_sender: Any, assigned: Any, **_kw: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == s.topic_feedback}
        await supervisor.guard(coordinator.on_assigned(mine))

    app.task(read)
    app.timer(interval=max(0.1, coordinator.interval_s))(commit_due)
    app.on_partitions_assigned.connect(on_assigned)
    return coordinator
