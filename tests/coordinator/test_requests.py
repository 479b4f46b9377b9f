"""API requests are decided in batches: the ones that arrive together go down to the handler in
one step (fraudstream/coordinator/requests.py), through the coordinator on in-memory ports."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fraudstream.coordinator.requests import Batcher, Busy, Pending, Taken
from fraudstream.core.records import NO_OFFSET, Record
from fraudstream.errors import PartitionMoved
from tests.coordinator.test_coordinator import Counting, run
from tests.fakes import FakeWriters, Tasks, make_coordinator, record


def ask(c: Any, partition: int, value: str, key: bytes = b"k") -> asyncio.Future[Any]:
    return asyncio.ensure_future(c.request(record(partition, NO_OFFSET, value.encode(), key)))


def test_requests_that_arrive_together_are_decided_in_one_step() -> None:
    async def body() -> None:
        handler = Counting()
        c, writers, _, _, _, tasks = make_coordinator(handler)
        await c.on_assigned({0, 1})
        await tasks.settle()
        answers = await asyncio.gather(
            ask(c, 0, "a"), ask(c, 1, "b"), ask(c, 0, "c"), ask(c, 0, "d", key=b"other")
        )
        assert answers == ["b'a'#1", "b'b'#1", "b'c'#2", "b'd'#1"]
        assert handler.steps == [[(0, NO_OFFSET), (1, NO_OFFSET), (0, NO_OFFSET), (0, NO_OFFSET)]]
        assert sorted(s.value for s in writers.visible) == [b"a", b"b", b"c", b"d"]
        tasks.check()

    run(body)


def test_requests_that_come_while_a_batch_is_decided_make_the_next_batch() -> None:
    async def body() -> None:
        handler = Counting()
        writers = FakeWriters()
        writers.acks = asyncio.Event()  # at least once: answered once "acknowledged"
        c, _, _, _, _, tasks = make_coordinator(handler, writers=writers, interval_s=60)
        await c.on_assigned({0})
        await tasks.settle()
        async with c.lock:  # a batch of the stream is being decided
            first = [ask(c, 0, "a"), ask(c, 0, "b")]
            await asyncio.sleep(0.01)
            later = [ask(c, 0, "c")]  # the batcher waits for the lock with a and b
            await asyncio.sleep(0.01)
            assert handler.steps == []
        await asyncio.sleep(0.01)
        writers.acks.set()
        assert await asyncio.gather(*first, *later) == ["b'a'#1", "b'b'#2", "b'c'#3"]
        assert handler.steps == [[(0, NO_OFFSET)] * 2, [(0, NO_OFFSET)]]
        tasks.check()

    run(body)


def test_a_request_for_a_committing_partition_waits_and_others_go_on() -> None:
    async def body() -> None:
        handler = Counting()
        writers = FakeWriters()
        c, _, _, _, _, tasks = make_coordinator(handler, writers=writers)
        await c.on_assigned({0, 1})
        await tasks.settle()
        writers.gate = asyncio.Event()
        first = ask(c, 0, "a")
        await asyncio.wait_for(writers.waiting.wait(), 5)  # partition 0 commits
        blocked, free = ask(c, 0, "b"), ask(c, 1, "c")
        await asyncio.sleep(0.05)
        assert handler.steps == [[(0, NO_OFFSET)], [(1, NO_OFFSET)]]  # b waits for the commit
        writers.gate.set()
        assert await asyncio.gather(first, blocked, free) == ["b'a'#1", "b'b'#2", "b'c'#1"]
        assert handler.steps[-1] == [(0, NO_OFFSET)]
        tasks.check()

    run(body)


def test_requests_for_a_partition_not_held_fail_and_the_rest_of_the_batch_is_decided() -> None:
    async def body() -> None:
        handler = Counting()
        c, _, source, _, _, tasks = make_coordinator(handler)
        source.assignment = {0}
        await c.on_assigned({0})
        await tasks.settle()
        held, moved = ask(c, 0, "a"), ask(c, 3, "b")
        with pytest.raises(PartitionMoved, match="partition 3 is not assigned"):
            await moved
        assert await held == "b'a'#1"
        assert handler.steps == [[(0, NO_OFFSET)]]
        tasks.check()

    run(body)


# --- the batcher alone --------------------------------------------------------------------------


def test_the_batcher_fails_a_batch_whose_decision_raises_and_goes_on() -> None:
    async def body() -> None:
        batches: list[list[bytes | None]] = []

        async def decide(batch: list[Pending]) -> None:
            batches.append([p.record.value for p in batch])
            if len(batches) == 1:
                raise RuntimeError("the handler broke")
            for p in batch[1:]:  # the first is left unanswered
                p.answer.set_result(Busy(asyncio.ensure_future(asyncio.sleep(0))))

        tasks = Tasks()
        b = Batcher(decide, tasks)

        def submit(value: bytes) -> asyncio.Future[Taken | Busy]:
            rec = Record("t", 0, NO_OFFSET, b"k", value, 0.0)
            return asyncio.ensure_future(b.submit(rec))

        broken = [submit(b"1"), submit(b"2")]
        await asyncio.sleep(0.01)
        for f in broken:
            with pytest.raises(RuntimeError, match="the handler broke"):
                await f
        unanswered, answered = submit(b"3"), submit(b"4")
        with pytest.raises(RuntimeError, match="not decided"):
            await unanswered
        assert isinstance(await answered, Busy)
        assert batches == [[b"1", b"2"], [b"3", b"4"]]
        assert b.task is None  # idle: the next request starts a new one
        tasks.check()

    run(body)
