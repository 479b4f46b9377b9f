"""One partition's state: where records stand against its next offset, refetches, commits."""

from __future__ import annotations

import asyncio

import pytest

from fraudstream.coordinator.partition import PartitionState, Place
from fraudstream.core.records import NO_OFFSET, Record
from fraudstream.errors import PartitionMoved


def test_partition_state_places_records_against_its_next_offset() -> None:
    st = PartitionState(3, committed=10, now=0.0)
    assert st.place(9) is Place.DECIDED
    assert st.place(10) is Place.NEXT
    assert st.place(12) is Place.AHEAD
    assert st.rewind(now=1.0) == 10
    assert st.place(11) is Place.REFETCHING
    assert st.refetch_overdue(now=2.0) is None
    assert st.refetch_overdue(now=7.0) == 10
    assert st.place(10) is Place.NEXT
    assert st.rewinding is None


def test_records_move_the_next_offset_and_requests_do_not() -> None:
    st = PartitionState(0, committed=None, now=0.0)
    assert st.place(41) is Place.NEXT  # nothing committed yet: the first record is the start
    st.accept(Record("t", 0, 41, b"k", b"v"))
    st.accept(Record("t", 0, NO_OFFSET, b"k", b"v"))
    assert st.next_offset == 42
    assert len(st.inflight) == 2
    assert st.has_work()
    assert not st.due(now=0.05, interval_s=0.1)
    assert st.due(now=0.1, interval_s=0.1)


def test_a_commit_answers_waiting_requests_and_a_revocation_fails_them() -> None:
    async def body() -> None:
        st = PartitionState(0, committed=5, now=0.0)
        done = st.next_commit()
        assert st.seal(now=1.0) is None  # the position has not moved
        st.committed()
        await done
        assert (st.inflight, st.dirty, st.began) == ([], False, 1.0)
        moved = st.next_commit()
        st.revoked()
        with pytest.raises(PartitionMoved):
            await moved

    asyncio.run(body())


def test_a_sealed_commit_carries_its_records_and_those_taken_meanwhile_wait_for_the_next() -> None:
    async def body() -> None:
        st = PartitionState(0, committed=10, now=0.0)
        st.accept(Record("t", 0, 10, b"k", b"v"))
        first = st.next_commit()
        assert st.seal(now=0.5) == 11
        assert (st.sealed_offset, st.has_work(), st.began) == (11, False, 0.5)
        st.committing = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        assert st.can_take(overlaps=True)
        assert not st.can_take(overlaps=False)
        st.accept(Record("t", 0, 11, b"k", b"v"))  # decided while the commit runs
        second = st.next_commit()
        assert second is not first
        st.committed()
        await first
        assert not second.done()
        assert (st.committed_offset, st.next_offset, len(st.inflight)) == (11, 12, 1)
        await st.committing

    asyncio.run(body())


def test_an_unsealed_commit_gives_back_its_records_first_and_its_waiters() -> None:
    async def body() -> None:
        st = PartitionState(0, committed=10, now=0.0)
        a, b = Record("t", 0, 10, b"k", b"v"), Record("t", 0, 11, b"k", b"v")
        st.accept(a)
        first = st.next_commit()
        st.seal(now=0.5)
        st.accept(b)
        assert st.unseal() == [a, b]
        assert (st.sealed, st.committed_offset, st.has_work()) == ([], 10, True)
        assert st.next_commit() is first  # both commit with the next one
        assert st.seal(now=1.0) == 12
        st.committed()
        await first

    asyncio.run(body())
