"""The coordinator deciding while a commit runs (at least once, issue 19): writers that overlap
and a handler that seals. What a commit carries is what was decided before it began; records
that come meanwhile are decided at once and carried by the next; an abort decides both again
from the committed state; a refused commit of a partition still held is carried next time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from fraudstream.coordinator.ports import Handled
from fraudstream.core.records import Record
from tests.coordinator.test_coordinator import Counting, rec, run, values
from tests.fakes import FakeWriters, ManualClock, make_coordinator


class Layered(Counting):
    """``Counting`` with a sealed layer (``ports.Sealing``): a commit folds what was pending
    when it began; what is counted meanwhile waits for the next."""

    def __init__(self) -> None:
        super().__init__()
        self.sealed: dict[int, dict[bytes, int]] = {}

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        self.sealed[partition] = {}
        return super().restore(partition, state)

    def step(self, records: Sequence[Record]) -> Handled[str]:
        # What the sealed layer holds is read under the pending one.
        for r in records:
            key = r.key or b""
            if key not in self.pending[r.partition] and key in self.sealed[r.partition]:
                self.pending[r.partition][key] = self.sealed[r.partition][key]
        return super().step(records)

    def seal(self, partition: int) -> None:
        self.sealed[partition].update(self.pending[partition])
        self.pending[partition] = {}

    def unseal(self, partition: int) -> None:
        self.pending[partition] = {**self.sealed[partition], **self.pending[partition]}
        self.sealed[partition] = {}

    def committed(self, partition: int) -> None:
        self.committed_state[partition].update(self.sealed[partition])
        self.sealed[partition] = {}

    def aborted(self, partition: int) -> None:
        self.sealed[partition] = {}
        super().aborted(partition)


def at_least_once() -> FakeWriters:
    return FakeWriters(shared=True, overlaps=True)


async def commit_held(writers: FakeWriters, c: Any, clock: ManualClock) -> None:
    """Start the interval's commit and hold it at the writers' gate."""
    writers.gate = asyncio.Event()
    clock.now += 1.0
    await c.commit_due()
    await asyncio.wait_for(writers.waiting.wait(), 5)


def test_records_are_decided_while_a_commit_runs_and_ride_the_next() -> None:
    async def body() -> None:
        writers, handler = at_least_once(), Layered()
        c, _, _, _, clock, tasks = make_coordinator(handler, writers=writers, interval_s=0.1)
        assert c.overlaps
        await c.handle([rec(0, 0), rec(1, 0)])
        await commit_held(writers, c, clock)
        await c.handle([rec(0, 1), rec(1, 1), rec(0, 2)])  # decided now, not after the commit
        assert [r.offset for r in c.partitions[0].waiting] == []
        assert [s.value for s in writers.open_sends[0]] == [b"v0-1", b"v0-2"]
        assert c.partitions[0].inflight[-1].offset == 2
        assert handler.pending[0] == {b"k": 3}  # counted on top of the sealed layer
        assert writers.gate is not None
        writers.gate.set()
        await tasks.settle()
        assert writers.commits == [{0: 1, 1: 1}]  # the first commit: what came before it
        assert handler.committed_state == {0: {b"k": 1}, 1: {b"k": 1}}
        assert values(writers) == [b"v0-0", b"v1-0"]
        clock.now += 1.0
        await c.commit_due()
        await tasks.settle()
        assert writers.commits[-1] == {0: 3, 1: 2}
        assert handler.committed_state == {0: {b"k": 3}, 1: {b"k": 2}}
        assert values(writers, 0) == [b"v0-0", b"v0-1", b"v0-2"]
        assert writers.changelog[0][-1] == (b"k", b"3")
        tasks.check()

    run(body)


def test_an_abort_while_records_came_decides_both_layers_again_from_what_was_committed() -> None:
    async def body() -> None:
        writers, handler = at_least_once(), Layered()
        c, _, _, observer, clock, tasks = make_coordinator(handler, writers=writers)
        await c.handle([rec(0, 0)])
        await c.commit_all()
        await c.handle([rec(0, 1)])
        writers.fail_commits = 1
        await commit_held(writers, c, clock)
        await c.handle([rec(0, 2)])  # decided on top of the sealed layer the abort drops
        assert writers.gate is not None
        writers.gate.set()
        await tasks.settle()
        # Both layers decided again in one step, then the retried commit carried them.
        assert observer.events[-3:] == [
            ("aborted", (0,)),
            ("decided", ((0,), 2)),
            ("committed", (0,)),
        ]
        await c.commit_all()
        assert handler.committed_state[0] == {b"k": 3}
        assert writers.offsets == {0: 3}
        assert values(writers, 0) == [b"v0-0", b"v0-1", b"v0-2"]
        tasks.check()

    run(body)


def test_while_an_aborted_commit_is_retried_records_wait_for_it() -> None:
    # A commit that keeps failing (the broker away) must not collect ever more records to
    # decide again at each attempt: after an abort, records wait until it commits.
    async def body() -> None:
        writers, handler = at_least_once(), Layered()
        c, _, _, observer, clock, tasks = make_coordinator(handler, writers=writers)
        await c.handle([rec(0, 0)])
        writers.fail_commits = 1
        clock.now += 1.0
        await c.commit_due()
        await _until(lambda: ("aborted", (0,)) in observer.events)
        st = c.partitions[0]
        assert st.retrying
        await c.handle([rec(0, 1)])  # during the retry's back-off
        assert [r.offset for r in st.waiting] == [1]
        await tasks.settle()  # the retry commits; the waiting record is decided after it
        assert not st.retrying
        assert st.waiting == []
        assert writers.commits == [{0: 1}]
        await c.commit_all()
        assert writers.offsets == {0: 2}
        assert values(writers, 0) == [b"v0-0", b"v0-1"]
        tasks.check()

    run(body)


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in 5 s")


def test_a_refused_commit_of_a_partition_still_held_is_carried_by_the_next() -> None:
    async def body() -> None:
        writers, handler = at_least_once(), Layered()
        c, _, source, _, clock, tasks = make_coordinator(handler, writers=writers)
        await c.handle([rec(0, 0), rec(1, 0)])
        source.assignment = {1}  # the group moved partition 0 while the commit ran
        writers.fence_commits = 1
        await commit_held(writers, c, clock)
        await c.handle([rec(1, 1)])
        assert writers.gate is not None
        writers.gate.set()
        await tasks.settle()
        assert tasks.failures() == []
        assert not c.owns(0)
        assert [r.offset for r in c.partitions[1].inflight] == [0, 1]
        assert handler.pending[1] == {b"k": 2}
        await c.commit_all()
        assert writers.offsets == {1: 2}
        assert handler.committed_state[1] == {b"k": 2}
        assert values(writers, 1) == [b"v1-0", b"v1-1"]
        tasks.check()

    run(body)


def test_a_handler_without_a_sealed_layer_waits_for_the_commit_even_at_least_once() -> None:
    async def body() -> None:
        writers = at_least_once()
        c, _, _, _, clock, tasks = make_coordinator(Counting(), writers=writers)
        assert not c.overlaps
        await c.handle([rec(0, 0)])
        await commit_held(writers, c, clock)
        await c.handle([rec(0, 1)])
        assert [r.offset for r in c.partitions[0].waiting] == [1]
        assert writers.gate is not None
        writers.gate.set()
        await tasks.settle()
        await c.commit_all()
        assert values(writers, 0) == [b"v0-0", b"v0-1"]
        tasks.check()

    run(body)
