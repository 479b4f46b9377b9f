"""Requests that did not come from the log (the scoring API) go down to the handler together:
every request that arrives while the previous batch is being decided, or in the same turn of the
event loop, is decided in one ``step``. One row costs the models far more than a row in a batch
(measured: ~1.2 ms of the worker's CPU for a request decided alone, at 16 concurrent clients)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from fraudstream.coordinator.partition import PartitionState
from fraudstream.coordinator.ports import Spawn
from fraudstream.core.records import Record
from fraudstream.errors import PartitionMoved


@dataclass(frozen=True, slots=True)
class Taken:
    """The request is decided into its partition's open transaction (``state``): answer it
    once ``acked`` (at least once: the broker has what was sent) or ``committed`` is done."""

    state: PartitionState
    acked: asyncio.Future[None] | None
    committed: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class Busy:
    """The request's partition is committing and takes no record: ask again once ``running``
    (that commit) is done."""

    running: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class Pending:
    record: Record
    answer: asyncio.Future[Taken | Busy]


class Batcher:
    """Queues requests and hands them to ``decide`` in batches, one batch at a time. ``decide``
    answers every ``Pending`` it is given (a result or an exception); one it leaves unanswered,
    or an exception it raises, fails the requests of that batch."""

    def __init__(self, decide: Callable[[list[Pending]], Awaitable[None]], spawn: Spawn) -> None:
        self.decide = decide
        self.spawn = spawn
        self.queue: list[Pending] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, record: Record) -> Taken | Busy:
        answer: asyncio.Future[Taken | Busy] = asyncio.get_running_loop().create_future()
        self.queue.append(Pending(record, answer))
        if self.task is None:
            self.task = self.spawn(self._run(), name="requests")
        return await answer

    async def _run(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                try:
                    await self.decide(batch)
                except Exception as exc:  # noqa: BLE001 - the batch's requests get the error
                    fail(batch, exc)
                fail(batch, RuntimeError("the request was not decided"))
        finally:
            self.task = None


def fail(batch: list[Pending], exc: BaseException) -> None:
    """Fail the requests of ``batch`` that have no answer yet."""
    for item in batch:
        if not item.answer.done():
            item.answer.set_exception(exc)


def ensure_future(acked: Awaitable[None] | None) -> asyncio.Future[None] | None:
    """The writers' acknowledgement as a future that many requests can await."""
    return None if acked is None else asyncio.ensure_future(acked)


def admitted(batch: list[Pending], closing: bool, held: Callable[[int], bool]) -> list[Pending]:
    """The requests of ``batch`` this worker can decide: it is not stopping and still holds
    their partition (``held``). The others fail with ``PartitionMoved``: retry."""
    live: list[Pending] = []
    for item in batch:
        p = item.record.partition
        if closing:
            item.answer.set_exception(PartitionMoved("the worker is stopping; retry the request"))
        elif not held(p):
            item.answer.set_exception(
                PartitionMoved(
                    f"partition {p} is not assigned to this worker (a rebalance is in "
                    "progress); retry the request"
                )
            )
        else:
            live.append(item)
    return live


def accepted(
    live: list[Pending],
    partitions: Mapping[int, PartitionState],
    opened: Mapping[int, BaseException | None],
    overlaps: bool,
) -> list[tuple[Pending, PartitionState]]:
    """The requests that go into their partition's open transaction now (accepted there), with
    that partition's state. A request whose partition failed to open (``opened``) or was let go
    fails; one whose partition is committing is told to wait for it (``Busy``) unless the
    writers take records while they commit (``overlaps``)."""
    taken: list[tuple[Pending, PartitionState]] = []
    for item in live:
        p = item.record.partition
        st = partitions.get(p)
        if (exc := opened.get(p)) is not None:
            item.answer.set_exception(exc)
        elif st is None:
            item.answer.set_exception(PartitionMoved(f"partition {p} moved while it opened; retry"))
        elif (running := st.busy(overlaps)) is not None:
            item.answer.set_result(Busy(running))
        else:
            st.accept(item.record)
            taken.append((item, st))
    return taken


def answer(taken: list[tuple[Pending, PartitionState]], acked: asyncio.Future[None] | None) -> None:
    """The decided requests learn what to wait for before they answer."""
    for item, st in taken:
        item.answer.set_result(Taken(st, acked, st.next_commit()))
