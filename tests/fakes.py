"""In-memory stand-ins for the coordinator's ports (``fraudstream.coordinator.ports``), with the
semantics of the real ones that matter: ``Writers`` keeps one transaction per partition, and
only committed transactions are seen by a read_committed reader (``visible``) or restored by
the next ``open``; ``Source`` records seeks and answers probes from a set of holes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.coordinator.ports import Restored
from fraudstream.core.records import Record
from fraudstream.errors import BrokerError, Fenced, TransactionAborted

M = TypeVar("M")


@dataclass(frozen=True)
class Sent:
    partition: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    to_partition: int | None = None


class FakeWriters:
    def __init__(self, *, shared: bool = False, overlaps: bool = False) -> None:
        self.shared = shared
        self.overlaps = overlaps  # records may be sent while a commit runs (at least once)
        self.changelog: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self.offsets: dict[int, int] = {}  # the group's committed offsets
        self.log_start: dict[int, int] = {}  # the first offset in each partition's log
        self.visible: list[Sent] = []  # what read_committed readers see, in commit order
        self.open_sends: dict[int, list[Sent]] = {}
        self.open_state: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self.opened: list[int] = []
        self.closed: list[int] = []
        self.commits: list[dict[int, int | None]] = []
        self.aborts: list[list[int]] = []
        self.fail_commits = 0  # the next N commits are aborted by "Kafka"
        self.fence_commits = 0  # the next N commits find a newer owner
        self.refuse_sends: set[int] = set()  # partitions whose producer a newer owner fenced
        self.gate: asyncio.Event | None = None  # when set: commits wait for it
        self.waiting = asyncio.Event()  # a commit is waiting at the gate
        self.acks: asyncio.Event | None = None  # set: at least once, "acknowledged" when set

    async def open(self, partition: int) -> Restored:
        self.opened.append(partition)
        self.open_sends[partition] = []
        self.open_state[partition] = []
        # Like the Kafka writers: without a committed offset, the log's start.
        start = self.offsets.get(partition, self.log_start.get(partition, 0))
        return Restored(list(self.changelog.get(partition, [])), start)

    def send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        to_partition: int | None = None,
    ) -> None:
        assert partition in self.open_sends, "a send on a partition that is not open"
        if partition in self.refuse_sends:
            raise BrokerError("test: writing into a fenced producer failed (fatal)")
        hdrs = {k: v.decode() for k, v in headers or ()}
        self.open_sends[partition].append(Sent(partition, topic, key, value, hdrs, to_partition))

    def delivered(self) -> Any:
        if self.acks is None:
            return None  # like the transactional writers: visible once committed
        return self.acks.wait()  # like the at-least-once writers: once the broker has it

    def keep(self, partition: int, key: bytes, value: bytes | None) -> None:
        assert partition in self.open_state, "state for a partition that is not open"
        self.open_state[partition].append((key, value))

    async def commit(self, positions: Mapping[int, int | None]) -> None:
        # The commit carries what was written before it began; with ``overlaps`` what is
        # written while it runs goes into the next one.
        carried = {p: (self.open_sends[p], self.open_state[p]) for p in positions}
        if self.overlaps:
            for p in positions:
                self.open_sends[p], self.open_state[p] = [], []
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.fence_commits:
            self.fence_commits -= 1
            if self.overlaps:  # nothing is undone: the next commit carries it (at least once)
                for p, (sends, state) in carried.items():
                    if p in self.open_sends:
                        self.open_sends[p][:0] = sends
                        self.open_state[p][:0] = state
            raise Fenced("test: a newer owner fenced this transaction")
        if self.fail_commits:
            self.fail_commits -= 1
            await self.abort(list(positions))  # the writers undo it before they say so
            raise TransactionAborted("test: the broker aborted this transaction")
        for p, offset in positions.items():
            sends, state = carried[p]
            self.visible.extend(sends)
            self.changelog.setdefault(p, []).extend(state)
            if not self.overlaps:
                self.open_sends[p], self.open_state[p] = [], []
            if offset is not None:
                self.offsets[p] = offset
        self.commits.append(dict(positions))

    async def abort(self, partitions: Sequence[int]) -> None:
        self.aborts.append(list(partitions))
        for p in partitions:
            self.open_sends[p] = []
            self.open_state[p] = []

    async def close(self, partition: int) -> None:
        self.open_sends.pop(partition, None)
        self.open_state.pop(partition, None)
        self.closed.append(partition)

    def seen(self, topic: str) -> list[Sent]:
        return [s for s in self.visible if s.topic == topic]


class FakeSource:
    def __init__(self) -> None:
        self.assignment: set[int] | None = None  # None: every partition is this worker's
        self.seeks: list[tuple[int, int]] = []
        self.holes: set[tuple[int, int, int]] = set()  # (partition, start, end) holding records
        self.probed: list[tuple[int, int, int]] = []

    def assigned(self, partition: int) -> bool:
        return self.assignment is None or partition in self.assignment

    async def seek(self, partition: int, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        self.probed.append((partition, start, end))
        return (partition, start, end) in self.holes


@dataclass
class FakeObserver:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def opened(self, partition: int, restored: int, seconds: float) -> None:
        self.events.append(("opened", partition))

    def let_go(self, partition: int) -> None:
        self.events.append(("let_go", partition))

    def decided(self, partitions: Sequence[int], events: int) -> None:
        self.events.append(("decided", (tuple(partitions), events)))

    def committed(self, partitions: Sequence[int], events: int, seconds: float) -> None:
        self.events.append(("committed", tuple(partitions)))

    def aborted(self, partitions: Sequence[int]) -> None:
        self.events.append(("aborted", tuple(partitions)))

    def refetched(self, partition: int, start: int, end: int) -> None:
        self.events.append(("refetched", (partition, start, end)))

    def skipped(self, partition: int, offsets: Sequence[int]) -> None:
        self.events.append(("skipped", (partition, tuple(offsets))))

    def redelivered(self, partition: int, count: int) -> None:
        self.events.append(("redelivered", (partition, count)))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Tasks:
    """``spawn`` for tests: background tasks whose failures the test sees (``check``)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    def failures(self) -> list[BaseException]:
        return [
            exc
            for t in self.tasks
            if t.done() and not t.cancelled() and (exc := t.exception()) is not None
        ]

    def check(self) -> None:
        failed = self.failures()
        assert not failed, failed

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every background task so far (and those they start) is done."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [t for t in self.tasks if not t.done()]
            if not pending:
                return
            assert time.monotonic() < deadline, f"background tasks still running: {pending}"
            await asyncio.wait(pending, timeout=max(0.01, deadline - time.monotonic()))


def make_coordinator(
    handler: Any,
    *,
    writers: FakeWriters | None = None,
    source: FakeSource | None = None,
    interval_s: float = 0.1,
    fence: Any = None,
) -> tuple[Coordinator[Any], FakeWriters, FakeSource, FakeObserver, ManualClock, Tasks]:
    writers = writers or FakeWriters()
    source = source or FakeSource()
    observer, clock, tasks = FakeObserver(), ManualClock(), Tasks()
    coordinator: Coordinator[Any] = Coordinator(
        handler=handler,
        writers=writers,
        source=source,
        observer=observer,
        spawn=tasks,
        fence=fence or (lambda: None),
        clock=clock,
        commit_interval_s=interval_s,
    )
    return coordinator, writers, source, observer, clock, tasks


def record(
    partition: int,
    offset: int,
    value: bytes | None,
    key: bytes | None,
    *,
    topic: str = "transactions",
    timestamp: float | None = None,
) -> Record:
    return Record(topic, partition, offset, key, value, timestamp)


class FetchingConsumer(Generic[M]):
    """A stand-in for a confluent-kafka consumer's reads, which records how it is asked."""

    def __init__(self, messages: list[M]) -> None:
        self.messages = messages
        self.calls: list[tuple[Any, ...]] = []

    def poll(self, timeout: float) -> M | None:
        self.calls.append(("poll", timeout))
        return self.messages.pop(0) if self.messages else None

    def consume(self, n: int, timeout: float) -> list[M]:
        self.calls.append(("consume", n, timeout))
        out, self.messages[:n] = self.messages[:n], []
        return out
