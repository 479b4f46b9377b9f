"""``coordinator.ordering.in_order``: a batch's first look, without a coordinator around it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fraudstream.coordinator.ordering import in_order
from fraudstream.coordinator.partition import PartitionState
from fraudstream.core.records import Record
from tests.fakes import FakeObserver, FakeSource, ManualClock, record


class Admit:
    """Admits records below ``limit``; only ``admit`` is used by ``in_order``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def admit(self, rec: Record) -> bool:
        return rec.offset < self.limit


def place(
    records: Sequence[Record], states: dict[int, PartitionState], limit: int = 99
) -> tuple[list[tuple[int, int]], FakeSource, FakeObserver]:
    source, observer = FakeSource(), FakeObserver()
    out = asyncio.run(
        in_order(records, states, Admit(limit), source, observer, ManualClock())  # type: ignore[arg-type]
    )
    return [(r.partition, r.offset) for r in out], source, observer


def recs(p: int, offsets: range) -> list[Record]:
    return [record(p, o, b"v", b"k") for o in offsets]


def test_records_below_the_next_offset_are_dropped_and_counted() -> None:
    states = {0: PartitionState(0, 3, 0.0)}
    got, _, observer = place(recs(0, range(5)), states)
    assert got == [(0, 3), (0, 4)]
    assert ("redelivered", (0, 3)) in observer.events
    assert states[0].next_offset == 5


def test_a_hole_with_records_is_fetched_again_and_what_follows_waits_for_it() -> None:
    states = {0: PartitionState(0, 0, 0.0), 1: PartitionState(1, 0, 0.0)}
    source = FakeSource()
    source.holes.add((0, 1, 3))
    out = asyncio.run(
        in_order(
            [*recs(0, range(1)), *recs(0, range(3, 5)), *recs(1, range(2))],
            states,
            Admit(99),  # type: ignore[arg-type]
            source,
            FakeObserver(),
            ManualClock(),
        )
    )
    assert [(r.partition, r.offset) for r in out] == [(0, 0), (1, 0), (1, 1)]
    assert source.seeks == [(0, 1)]


def test_a_record_not_admitted_parks_its_partition_with_everything_after_it() -> None:
    states = {0: PartitionState(0, 0, 0.0), 1: PartitionState(1, 0, 0.0)}
    got, _, _ = place([*recs(0, range(4)), *recs(1, range(2))], states, limit=2)
    assert got == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert states[0].parked
    assert [r.offset for r in states[0].waiting] == [2, 3]
    got, _, _ = place(recs(0, range(4, 5)), states)  # parked: later records wait too
    assert got == []
    assert [r.offset for r in states[0].waiting] == [2, 3, 4]
