"""What the coordinator needs from the outside, as small protocols: where records come from and
how to move in them (``Source``), where its outputs and state go (``Writers``), what it runs per
record (``PartitionHandler``), who hears about its work (``Observer``), and the clock.

Production implementations: ``fraudstream.app.wiring`` (Source over Faust's consumer),
``fraudstream.kafka.txn.TransactionalWriters`` (one Kafka transaction per input partition) or
``fraudstream.kafka.alo.AtLeastOnceWriters`` (no transactions),
``fraudstream.app.scoring.ScoringHandler`` (the fraud decision), ``fraudstream.app.wiring``
(Observer as Prometheus metrics). Tests implement them in a few lines each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

from fraudstream.core.records import Record

R = TypeVar("R")


class Restored(NamedTuple):
    """What ``Writers.open`` found for a partition: its committed state records (key, value or
    None for a deletion), in log order, and the group's committed input offset (None: none)."""

    state: list[tuple[bytes, bytes | None]]
    committed: int | None


@dataclass(frozen=True, slots=True)
class Send:
    """One output record, written in the transaction of input partition ``partition``."""

    partition: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    to_partition: int | None = None  # the output partition; None: the producer's partitioner


@dataclass(slots=True)
class Handled(Generic[R]):
    """What a handler made of a batch: the records to send, one result per input record, and
    the partitions whose open transaction should commit now rather than at the interval (what
    it wrote is awaited: a watermark that parked partitions elsewhere wait for)."""

    sends: list[Send] = field(default_factory=list)
    results: list[R] = field(default_factory=list)
    hurry: frozenset[int] = frozenset()


class Source(Protocol):
    """The input topic as the coordinator moves in it (Faust's consumer in production)."""

    def assigned(self, partition: int) -> bool:
        """Whether the consumer group gives this partition to this worker right now."""
        ...

    async def seek(self, partition: int, offset: int) -> None:
        """Fetch the partition again from ``offset``."""
        ...

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        """Whether a read_committed reader finds a record in offsets [start, end)."""
        ...


class Writers(Protocol):
    """Where outputs, state and input positions go, atomically per commit.

    Today one Kafka transaction per input partition (``fraudstream.kafka.txn``). An
    at-least-once writer (send at once, commit offsets after delivery) or one transaction per
    worker (issue 19) implement the same methods: ``commit`` takes every partition that commits
    together, and ``shared`` says whether partitions share one transaction."""

    #: True when all partitions share one transaction: they always commit together.
    shared: bool
    #: True when records may be written while a commit runs (at least once: a record goes out
    #: when it is sent, and a commit covers what was sent before it began). Transactions: False,
    #: a producer takes no record while it commits.
    overlaps: bool

    async def open(self, partition: int) -> Restored:
        """Fence earlier owners of ``partition``, begin its transaction, return its state."""
        ...

    def send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        to_partition: int | None = None,
    ) -> None:
        """Write one output record into ``partition``'s open transaction (into output
        partition ``to_partition`` when given)."""
        ...

    def keep(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write one state record into ``partition``'s changelog, in its open transaction."""
        ...

    def delivered(self) -> Awaitable[None] | None:
        """Done once everything sent so far is acknowledged by the broker for good (at least
        once: an API request is answered then); None where only a commit makes what was sent
        visible (transactions: a request is answered once its transaction commits)."""
        ...

    async def commit(self, positions: Mapping[int, int | None]) -> None:
        """Commit these partitions' transactions with these input positions (the next offset to
        read; None: leave the position). Raises ``TransactionAborted`` (everything in them is
        undone and new transactions begun: decide again) or ``Fenced`` (a newer owner took
        over); anything else is fatal."""
        ...

    async def abort(self, partitions: Sequence[int]) -> None:
        """Undo these partitions' open transactions and begin new ones."""
        ...

    async def close(self, partition: int) -> None:
        """Let go of the partition (its last transaction is committed or aborted)."""
        ...


class PartitionHandler(Protocol[R]):
    """What runs, exactly once per input record, under the coordinator: the fraud decision
    today (``ScoringHandler``); the entity aggregator of docs/DESIGN-entity-state.md next.

    The handler keeps per-partition state with a committed and a pending part: ``step`` changes
    the pending part, ``changes`` lists what the open transaction must write to the changelog,
    and ``committed`` / ``aborted`` fold it in or drop it (a ``Sealing`` handler: the sealed
    part, and both)."""

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        """Take the partition with its committed state records; returns how many it holds."""
        ...

    def admit(self, record: Record) -> bool:
        """Whether ``record`` may be decided now. A record that may not waits, with every later
        record of its partition, until ``Coordinator.wake`` (a watermark that moved, say)."""
        ...

    def step(self, records: Sequence[Record]) -> Handled[R]:
        """Decide ``records`` (of open partitions, in offset order per partition)."""
        ...

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """The state records the open transaction changed."""
        ...

    def owed(self, partition: int) -> list[Send]:
        """Records the partition's transaction must carry when it commits (the watermark of
        what it has decided: a partition parked for a watermark commits at once, and the
        watermark it waits for must ride that commit, not the next)."""
        ...

    def committed(self, partition: int) -> None: ...

    def aborted(self, partition: int) -> None: ...

    def drop(self, partition: int) -> None:
        """The partition went to another worker: forget it."""
        ...


@runtime_checkable
class Sealing(Protocol):
    """A handler that can go on deciding while its partition commits (under writers that
    overlap): ``seal`` right after ``changes`` closes the layer that commit carries, and what
    ``step`` changes from then on is a new pending layer, read on top of it. ``committed``
    then folds only the sealed layer; ``aborted`` drops both (the coordinator decides the
    records of both again); ``unseal`` puts the sealed layer back under the pending one (the
    commit was refused but the partition is still held: the next commit carries both)."""

    def seal(self, partition: int) -> None: ...

    def unseal(self, partition: int) -> None: ...


class Observer(Protocol):
    """Who hears about the coordinator's work (metrics in production)."""

    def opened(self, partition: int, restored: int, seconds: float) -> None: ...

    def let_go(self, partition: int) -> None: ...

    def decided(self, partitions: Sequence[int], events: int) -> None:
        """``events`` records of ``partitions`` went into their open transactions: the scoring
        path's real progress (Faust's stall detector watches it)."""
        ...

    def committed(self, partitions: Sequence[int], events: int, seconds: float) -> None: ...

    def aborted(self, partitions: Sequence[int]) -> None: ...

    def refetched(self, partition: int, start: int, end: int) -> None: ...

    def skipped(self, partition: int, offsets: Sequence[int]) -> None: ...

    def redelivered(self, partition: int, count: int) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...


class Spawn(Protocol):
    """Runs a background task; a task that fails must stop the worker (the supervisor)."""

    def __call__(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]: ...
