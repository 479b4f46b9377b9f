"""The coordinator on in-memory ports (tests/fakes.py): no Faust, no broker.

Most tests run a small counting handler, so that what is checked is the coordinator's own
bookkeeping: offsets, holes, waiting, commits, aborts, ownership. The scoring handler's own tests
are in tests/app/test_scoring.py; the regression of the SIGKILL x3 duplicates runs both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from fraudstream.coordinator.ports import Handled, Send
from fraudstream.core.records import NO_OFFSET, Record
from fraudstream.errors import BrokerError, Fenced, PartitionMoved, WorkerFrozen
from tests.fakes import FakeWriters, make_coordinator, record


class Counting:
    """Sends each record's value to ``out``; keeps, per partition, how often each key came."""

    def __init__(
        self, admit: Callable[[Record], bool] | None = None, *, hurry_on: bytes | None = None
    ) -> None:
        self.committed_state: dict[int, dict[bytes, int]] = {}
        self.pending: dict[int, dict[bytes, int]] = {}
        self.steps: list[list[tuple[int, int]]] = []
        self._admit = admit or (lambda _r: True)
        self.hurry_on = hurry_on  # a record with this key asks for its commit now
        self.owes: dict[int, list[Send]] = {}  # what the next commit of a partition carries

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        table: dict[bytes, int] = {}
        for key, value in state:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = int(value)
        self.committed_state[partition] = table
        self.pending[partition] = {}
        return len(table)

    def admit(self, record: Record) -> bool:
        return self._admit(record)

    def step(self, records: Sequence[Record]) -> Handled[str]:
        self.steps.append([(r.partition, r.offset) for r in records])
        out: Handled[str] = Handled()
        for r in records:
            key = r.key or b""
            seen = self.pending[r.partition].get(key, self.committed_state[r.partition].get(key, 0))
            self.pending[r.partition][key] = seen + 1
            out.sends.append(Send(r.partition, "out", r.key, r.value))
            out.results.append(f"{r.value!r}#{seen + 1}")
        wanted = self.hurry_on
        hurry = {r.partition for r in records if wanted is not None and r.key == wanted}
        return Handled(out.sends, out.results, frozenset(hurry))

    def owed(self, partition: int) -> list[Send]:
        return self.owes.pop(partition, [])

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        return [(k, str(v).encode()) for k, v in self.pending[partition].items()]

    def committed(self, partition: int) -> None:
        self.committed_state[partition].update(self.pending[partition])
        self.pending[partition] = {}

    def aborted(self, partition: int) -> None:
        self.pending[partition] = {}

    def drop(self, partition: int) -> None:
        self.committed_state.pop(partition, None)
        self.pending.pop(partition, None)


def rec(p: int, o: int, value: str = "", key: bytes = b"k") -> Record:
    return record(p, o, (value or f"v{p}-{o}").encode(), key)


def run(coro: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout=30))


def values(writers: FakeWriters, partition: int | None = None) -> list[bytes | None]:
    """What a read_committed reader of ``out`` sees (of one input partition, in order)."""
    return [s.value for s in writers.seen("out") if partition in (None, s.partition)]


# --- offsets ------------------------------------------------------------------------------------


def test_records_delivered_again_below_the_next_offset_are_dropped() -> None:
    """Faust delivers the first fetch after an assignment twice when its table recovery had work
    (it resumes the fetcher before it seeks the stream partitions back to the committed
    offsets). The second copy is already decided, in a committed or the open transaction."""

    async def body() -> None:
        handler = Counting()
        c, writers, _, observer, _, tasks = make_coordinator(handler)
        await c.handle([rec(0, o) for o in range(4)])
        await c.commit_all()
        await c.handle([rec(0, o) for o in range(6)])  # 0..3 again (committed), then 4, 5
        await c.handle([rec(0, 5), rec(0, 4)])  # again, still in the open transaction
        await c.commit_all()
        assert values(writers) == [f"v0-{o}".encode() for o in range(6)]
        assert writers.offsets == {0: 6}
        assert ("redelivered", (0, 4)) in observer.events
        assert handler.committed_state[0] == {b"k": 6}
        tasks.check()

    run(body)


def test_a_hole_holding_records_is_fetched_again_and_a_hole_without_is_accepted() -> None:
    async def body() -> None:
        c, writers, source, observer, clock, tasks = make_coordinator(Counting())
        await c.handle([rec(0, 0), rec(0, 1)])
        source.holes.add((0, 2, 4))  # offsets 2..3 hold records Faust did not deliver
        await c.handle([rec(0, 4), rec(0, 5)])
        assert source.seeks == [(0, 2)]
        assert ("refetched", (0, 2, 4)) in observer.events
        # Records past the hole that were fetched before the seek wait for the refetch...
        await c.handle([rec(0, 6)])
        clock.now += 6.0  # ...and a refetch that does not come is asked for again.
        await c.handle([rec(0, 7)])
        assert source.seeks == [(0, 2), (0, 2)]
        await c.handle([rec(0, o) for o in range(2, 8)])  # the refetch
        await c.commit_all()
        assert values(writers) == [f"v0-{o}".encode() for o in range(8)]
        assert writers.offsets == {0: 8}
        # A hole without records (commit markers of a transactional producer) is accepted.
        await c.handle([rec(0, 12)])
        await c.commit_all()
        assert (0, 8, 12) in source.probed
        assert writers.offsets == {0: 13}
        tasks.check()

    run(body)


def test_a_partition_never_committed_starts_at_its_log_start_and_sees_a_hole_before() -> None:
    """Faust drops records fetched while its flow is stopped and seeks back only partitions
    with a committed offset: the first record delivered of a new partition may not be its
    first. Its writers say where the log starts, so that this is a hole like any other."""

    async def body() -> None:
        writers = FakeWriters()
        writers.log_start[2] = 40
        c, _, source, _, _, tasks = make_coordinator(Counting(), writers=writers)
        source.holes.add((2, 40, 170))
        await c.handle([rec(2, 170)])
        assert source.seeks == [(2, 40)]
        await c.handle([rec(2, o) for o in range(40, 171)])
        await c.commit_all()
        assert writers.offsets == {2: 171}
        assert len(values(writers)) == 131
        tasks.check()

    run(body)


# --- commits ------------------------------------------------------------------------------------


def test_an_aborted_transaction_is_decided_again_from_the_state_it_saw() -> None:
    async def body() -> None:
        handler = Counting()
        c, writers, _, observer, _, tasks = make_coordinator(handler)
        await c.handle([rec(0, o) for o in range(3)])
        writers.fail_commits = 1
        await c.commit_all()
        assert observer.count("aborted") == 1
        assert writers.aborts == [[0]]
        assert values(writers) == [b"v0-0", b"v0-1", b"v0-2"]
        # Decided again from the committed state, not from the aborted attempt's.
        assert handler.committed_state[0] == {b"k": 3}
        assert writers.changelog[0][-1] == (b"k", b"3")
        assert writers.offsets == {0: 3}
        tasks.check()

    run(body)


def test_a_partition_committing_holds_its_records_and_the_others_go_on() -> None:
    async def body() -> None:
        writers = FakeWriters()
        c, _, _, _, clock, tasks = make_coordinator(Counting(), writers=writers, interval_s=0.1)
        await c.handle([rec(0, 0)])
        writers.gate = asyncio.Event()
        clock.now += 1.0
        await c.handle([rec(0, 1)])  # partition 0's transaction is due: its commit starts
        await asyncio.wait_for(writers.waiting.wait(), 5)
        await c.handle([rec(0, 2), rec(1, 0), rec(0, 3)])
        assert [s.value for s in writers.open_sends[1]] == [b"v1-0"]
        assert [r.offset for r in c.partitions[0].waiting] == [2, 3]
        writers.gate.set()
        await tasks.settle()
        assert c.partitions[0].waiting == []
        await c.commit_all()
        assert values(writers, 0) == [b"v0-0", b"v0-1", b"v0-2", b"v0-3"]
        assert values(writers, 1) == [b"v1-0"]
        assert writers.offsets == {0: 4, 1: 1}
        tasks.check()

    run(body)


def test_partitions_sharing_one_transaction_commit_together() -> None:
    """Writers with one transaction for the worker (issue 19) plug in behind the same ports."""

    async def body() -> None:
        writers = FakeWriters(shared=True)
        c, _, _, _, clock, tasks = make_coordinator(Counting(), writers=writers)
        await c.handle([rec(0, 0), rec(1, 0), rec(2, 0)])
        clock.now += 1.0
        await c.commit_due()
        await tasks.settle()
        assert writers.commits == [{0: 1, 1: 1, 2: 1}]
        tasks.check()

    run(body)


# --- ownership ----------------------------------------------------------------------------------


def test_a_partition_given_away_is_aborted_and_taken_again_as_a_new_state() -> None:
    """Everything of an ownership goes with its state object: nothing stale is left for the
    next time the partition is assigned here (the old code kept three of nine tables)."""

    async def body() -> None:
        handler = Counting()
        c, writers, source, observer, _, tasks = make_coordinator(handler)
        source.assignment = {0, 1}
        await c.on_assigned({0, 1})
        await tasks.settle()
        await c.handle([rec(0, 0), rec(1, 0)])
        await c.commit_all()
        first = c.partitions[0]
        await c.handle([rec(0, 1), rec(0, 2)])  # decided, not committed
        source.assignment = {1}
        await c.on_assigned({1})
        assert not c.owns(0)
        assert writers.aborts == [[0]]
        assert writers.closed == [0]
        assert ("let_go", 0) in observer.events
        source.assignment = {0, 1}
        await c.on_assigned({0, 1})
        await tasks.settle()
        assert c.partitions[0] is not first
        assert c.position(0) == 1  # the committed offset, not the old state's 3
        await c.handle([rec(0, o) for o in range(3)])  # Faust seeks to the committed offset
        await c.commit_all()
        assert values(writers, 0) == [b"v0-0", b"v0-1", b"v0-2"]
        assert handler.committed_state[0] == {b"k": 3}
        tasks.check()

    run(body)


def test_a_partition_given_away_while_it_opens_is_closed_not_kept() -> None:
    async def body() -> None:
        writers = FakeWriters()
        c, _, source, _, _, tasks = make_coordinator(Counting(), writers=writers)
        source.assignment = {0}
        started, release = asyncio.Event(), asyncio.Event()
        opened = writers.open

        async def slow_open(partition: int) -> Any:
            got = await opened(partition)  # earlier owners fenced...
            started.set()
            await release.wait()  # ...and the state still being read
            return got

        writers.open = slow_open  # type: ignore[method-assign]
        await c.on_assigned({0})
        await started.wait()
        source.assignment = set()
        await c.on_assigned(set())
        release.set()
        await tasks.settle()
        assert not c.owns(0)
        assert writers.closed == [0]
        await c.handle([rec(0, 0)])  # a record fetched before the rebalance
        assert writers.open_sends == {}
        tasks.check()

    run(body)


def test_fenced_after_revocation_lets_go_and_fenced_while_assigned_is_fatal() -> None:
    async def body() -> None:
        writers = FakeWriters()
        c, _, source, _, clock, tasks = make_coordinator(Counting(), writers=writers)
        await c.handle([rec(0, 0), rec(1, 0)])
        source.assignment = {1}  # partition 0 moved; the new owner fenced this worker
        writers.fence_commits = 1
        clock.now += 1.0
        await c.commit_due()
        await tasks.settle()
        assert not c.owns(0)
        assert c.owns(1)
        assert tasks.failures() == []
        # Still assigned and fenced: a zombie. The error reaches the supervisor.
        writers.fence_commits = 1
        await c.handle([rec(1, 1)])
        clock.now += 1.0
        await c.commit_due()
        await asyncio.wait(tasks.tasks)
        assert [type(e) for e in tasks.failures()] == [Fenced]

    run(body)


def test_shared_writers_refused_for_a_moved_partition_keep_the_others_and_commit_again() -> None:
    # At least once, every partition commits together. The group moved partition 0 while the
    # commit was under way (seen in the scale 1→2→1 fault scenario, where the worker then
    # exited): partition 0 is let go, partition 1 stays and its records commit at the next
    # interval, nothing fails.
    async def body() -> None:
        writers = FakeWriters(shared=True)
        c, _, source, _, clock, tasks = make_coordinator(Counting(), writers=writers)
        await c.handle([rec(0, 0), rec(1, 0), rec(1, 1)])
        source.assignment = {1}
        writers.fence_commits = 1
        clock.now += 1.0
        await c.commit_due()
        await tasks.settle()
        assert tasks.failures() == []
        assert not c.owns(0)
        assert c.owns(1)
        assert writers.offsets == {}
        clock.now += 1.0
        await c.commit_due()
        await tasks.settle()
        assert tasks.failures() == []
        assert writers.offsets == {1: 2}
        assert [s.value for s in writers.seen("out")] == [b"v1-0", b"v1-1"]

    run(body)


def test_a_rebalance_waiting_for_a_refused_shared_commit_skips_what_it_let_go() -> None:
    # Seen in the scale 1→2→1 at-least-once scenario (KeyError, exit 70): the rebalance waited
    # for the shared commit of partition 0, whose refusal let go of partitions 0 and 1 at once.
    async def body() -> None:
        writers = FakeWriters(shared=True)
        c, _, source, _, clock, tasks = make_coordinator(Counting(), writers=writers)
        await c.handle([rec(p, 0) for p in range(4)])
        writers.gate = asyncio.Event()
        writers.fence_commits = 1
        clock.now += 1.0
        await c.commit_due()
        await asyncio.wait_for(writers.waiting.wait(), 5)
        source.assignment = {2, 3}
        rebalance = asyncio.ensure_future(c.on_assigned({2, 3}))
        await asyncio.sleep(0.01)
        writers.gate.set()
        await asyncio.wait_for(rebalance, 5)
        await tasks.settle()
        assert tasks.failures() == []
        assert [p for p in range(4) if c.owns(p)] == [2, 3]

    run(body)


def test_a_write_refused_after_the_partition_moved_lets_it_go_and_while_held_is_fatal() -> None:
    # Seen in the scale 1→2→1 scenario: the rebalance gave partition 0 away while its commit
    # waited; the new owner fenced its producer, so writing the commit's watermark failed
    # ("fatal") and the worker exited. Given away: let go. Still held: the supervisor's.
    async def body() -> None:
        handler = Counting()
        c, writers, source, _, clock, tasks = make_coordinator(handler)
        await c.handle([rec(0, 0), rec(1, 0)])
        handler.owes[0] = [Send(0, "marks", b"w", b"1")]
        source.assignment = {1}
        writers.refuse_sends = {0}
        clock.now += 1.0
        await c.commit_due()
        await tasks.settle()
        assert tasks.failures() == []
        assert not c.owns(0)
        assert writers.offsets == {1: 1}
        await c.handle([rec(1, 1)])
        handler.owes[1] = [Send(1, "marks", b"w", b"1")]
        writers.refuse_sends = {1}
        clock.now += 1.0
        await c.commit_due()
        await asyncio.wait(tasks.tasks)
        assert [type(e) for e in tasks.failures()] == [BrokerError]

    run(body)


def test_a_frozen_worker_writes_nothing() -> None:
    def fence() -> None:
        raise WorkerFrozen("test: frozen")

    async def body() -> None:
        c, writers, _, _, _, _ = make_coordinator(Counting(), fence=fence)
        with pytest.raises(WorkerFrozen):
            await c.handle([rec(0, 0)])
        assert writers.open_sends[0] == []

    run(body)


# --- requests -----------------------------------------------------------------------------------


def test_requests_are_answered_once_committed_and_share_commits() -> None:
    async def body() -> None:
        writers = FakeWriters()
        c, _, _, _, _, tasks = make_coordinator(Counting(), writers=writers)
        writers.gate = asyncio.Event()

        def ask(i: int) -> asyncio.Future[Any]:
            return asyncio.ensure_future(c.request(record(0, NO_OFFSET, f"r{i}".encode(), b"k")))

        first = ask(0)
        await asyncio.wait_for(writers.waiting.wait(), 5)  # its commit is under way
        later = [ask(1), ask(2)]  # they wait for it, then share the next one
        await asyncio.sleep(0.05)
        assert not first.done()
        assert not any(a.done() for a in later)
        writers.gate.set()
        answers = await asyncio.gather(first, *later)
        assert answers == ["b'r0'#1", "b'r1'#2", "b'r2'#3"]
        assert len(writers.commits) == 2
        assert [s.value for s in writers.visible] == [b"r0", b"r1", b"r2"]
        assert writers.offsets == {}  # requests move no input offset
        tasks.check()

    run(body)


def test_at_least_once_a_request_is_answered_once_acknowledged_and_commits_later() -> None:
    async def body() -> None:
        writers = FakeWriters()
        writers.acks = asyncio.Event()
        c, _, _, _, _, tasks = make_coordinator(Counting(), writers=writers, interval_s=60)
        await c.on_assigned({0})
        await tasks.settle()
        ask = asyncio.ensure_future(c.request(record(0, NO_OFFSET, b"r", b"k")))
        await asyncio.sleep(0.05)
        assert not ask.done()  # the broker has not acknowledged it yet
        writers.acks.set()
        assert await asyncio.wait_for(ask, 5) == "b'r'#1"
        assert writers.commits == []  # no commit of its own: the next regular one has it
        await c.commit_all()
        assert writers.commits == [{0: None}]
        tasks.check()

    run(body)


def test_a_request_whose_partition_moves_before_its_commit_fails_to_be_retried() -> None:
    async def body() -> None:
        writers = FakeWriters()
        c, _, source, _, _, tasks = make_coordinator(Counting(), writers=writers)
        source.assignment = {0}
        await c.on_assigned({0})
        await tasks.settle()
        writers.fence_commits = 1
        source.assignment = set()
        with pytest.raises(PartitionMoved):
            await c.request(record(0, NO_OFFSET, b"r", b"k"))
        assert writers.visible == []

    run(body)


# --- waiting for the handler ------------------------------------------------------------------


def test_records_the_handler_refuses_wait_in_order_and_the_partition_commits_meanwhile() -> None:
    """The hook for event-time alignment (docs/DESIGN-entity-state.md): a record that may not be
    decided yet waits with everything after it in its partition; the partition commits what it
    has written, so that whatever it waits for can progress; ``wake`` looks again."""
    allowed = {"limit": 2}

    async def body() -> None:
        handler = Counting(admit=lambda r: r.offset < allowed["limit"])
        c, writers, _, _, _, tasks = make_coordinator(handler)
        await c.handle([rec(0, o) for o in range(5)] + [rec(1, 0)])
        await tasks.settle()
        assert values(writers) == [b"v0-0", b"v0-1"]  # committed although not due yet
        assert [r.offset for r in c.partitions[0].waiting] == [2, 3, 4]
        await c.handle([rec(0, 5)])
        allowed["limit"] = 4
        await c.wake()
        await c.commit_all()
        assert values(writers, 0) == [b"v0-0", b"v0-1", b"v0-2", b"v0-3"]
        assert values(writers, 1) == [b"v1-0"]
        allowed["limit"] = 99
        await c.commit_due()
        await c.commit_all()
        assert values(writers)[-2:] == [b"v0-4", b"v0-5"]
        assert writers.offsets == {0: 6, 1: 1}
        tasks.check()

    run(body)


def test_a_parked_partition_commits_at_once_with_what_it_owes_and_again_after_wake() -> None:
    """The entity gate's round trip (issue 17: a replay's speed is one round trip per hour of
    event time): the watermark a parked partition owes rides the commit that parking starts,
    not a later one, and a partition that parks again after ``wake`` commits at once too."""
    allowed = {"limit": 2}

    async def body() -> None:
        handler = Counting(admit=lambda r: r.offset < allowed["limit"])
        c, writers, _, _, _, tasks = make_coordinator(handler)
        handler.owes[0] = [Send(0, "out", b"w", b"mark-2")]
        await c.handle([rec(0, o) for o in range(5)])
        await tasks.settle()
        assert values(writers) == [b"v0-0", b"v0-1", b"mark-2"]
        assert len(writers.commits) == 1
        handler.owes[0] = [Send(0, "out", b"w", b"mark-4")]
        allowed["limit"] = 4
        await c.wake()  # decides 2, 3 and parks again at 4: commits without a timer
        await tasks.settle()
        assert values(writers)[-3:] == [b"v0-2", b"v0-3", b"mark-4"]
        assert len(writers.commits) == 2
        tasks.check()

    run(body)


def test_a_long_wait_is_decided_in_steps_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """What piled up while the gate was shut goes to the handler in steps of ``STEP_MAX``:
    the first step's outputs are written (on their way to the broker) before the next is
    decided, and the order is the partition's."""
    from fraudstream.coordinator import coordinator as coordinator_module

    monkeypatch.setattr(coordinator_module, "STEP_MAX", 4)
    allowed = {"limit": 1}

    async def body() -> None:
        handler = Counting(admit=lambda r: r.offset < allowed["limit"])
        c, writers, _, _, _, tasks = make_coordinator(handler)
        await c.handle([rec(0, o) for o in range(11)])
        await tasks.settle()
        handler.steps.clear()
        written: list[int] = []
        step = handler.step

        def counting_step(records: Sequence[Record]) -> Handled[str]:
            written.append(len(values(writers, 0)) + len(writers.open_sends.get(0, [])))
            return step(records)

        handler.step = counting_step  # type: ignore[method-assign]
        allowed["limit"] = 99
        await c.wake()
        await c.commit_all()
        assert [[o for _, o in st] for st in handler.steps] == [
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            [9, 10],
        ]
        assert written == [1, 5, 9]  # each step after the previous one's outputs were written
        assert values(writers, 0) == [f"v0-{o}".encode() for o in range(11)]
        tasks.check()

    run(body)


def test_a_handler_in_a_hurry_commits_before_the_interval() -> None:
    """The aggregator commits at once when a batch holds a watermark: scoring partitions
    elsewhere wait for it. Other batches wait for the interval."""

    async def body() -> None:
        handler = Counting(hurry_on=b"wm")
        c, writers, _, _, _, tasks = make_coordinator(handler)
        await c.handle([rec(0, 0), rec(1, 0)])
        await tasks.settle()
        assert writers.commits == []  # not due: the interval has not passed
        await c.handle([rec(0, 1, key=b"wm")])
        await tasks.settle()
        assert writers.commits == [{0: 2}]  # partition 0 at once; partition 1 still open
        await c.commit_all()
        assert writers.offsets == {0: 2, 1: 1}
        tasks.check()

    run(body)


def test_a_stopping_worker_decides_nothing_after_its_last_commit() -> None:
    """At least once a record decided after the last commit would be sent with its offset never
    committed: decided twice after the restart (a SIGTERM fault run found 18 so)."""

    async def body() -> None:
        handler = Counting()
        c, writers, _, _, _, tasks = make_coordinator(handler)
        await c.handle([rec(0, 0), rec(0, 1)])
        c.close()
        await c.handle([rec(0, 2)])  # still queued when the fetcher stopped: left for later
        await c.commit_all()  # the last commit: what was decided before
        assert values(writers) == [b"v0-0", b"v0-1"]
        assert writers.offsets == {0: 2}
        with pytest.raises(PartitionMoved, match="stopping"):
            await c.request(record(0, NO_OFFSET, b"api", b"k"))
        assert values(writers) == [b"v0-0", b"v0-1"]
        tasks.check()

    run(body)
