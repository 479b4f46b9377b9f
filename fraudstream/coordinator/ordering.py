"""Where fetched records go (the coordinator's first look at a batch): each partition's
records in offset order from its next offset. A record delivered again is dropped, a hole that
holds records is fetched again (everything past it waits), and a record the handler does not
admit yet parks its partition with every later record."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from fraudstream.coordinator import ports
from fraudstream.coordinator.partition import PartitionState, Place
from fraudstream.core.records import Record

log = logging.getLogger("fraudstream.coordinator")


async def in_order(
    records: Sequence[Record],
    partitions: Mapping[int, PartitionState],
    handler: ports.PartitionHandler[Any],
    source: ports.Source,
    observer: ports.Observer,
    clock: ports.Clock,
) -> list[Record]:
    """The records that go into their transactions now, each partition's gap-free from its
    next offset; the others are dropped (delivered again), left to a refetch, or wait."""
    out: list[Record] = []
    blocked: set[int] = set()
    again: Counter[int] = Counter()
    for rec in records:
        p = rec.partition
        st = partitions.get(p)
        if st is None or p in blocked:
            continue  # let go meanwhile, or past a hole being fetched again
        if st.parked:
            st.waiting.append(rec)
            continue
        place = st.place(rec.offset)
        if place is Place.DECIDED:
            again[p] += 1
            continue
        if place is Place.REFETCHING:
            target = st.refetch_overdue(clock.monotonic())
            if target is not None:
                await source.seek(p, target)  # the refetch was lost too: again
            continue
        if place is Place.AHEAD:
            start = st.next_offset
            assert start is not None
            if await source.has_records(p, start, rec.offset):
                # Faust can drop fetched records around a rebalance: fetch them again, and
                # let everything past the hole wait for them.
                log.warning(
                    "partition %d: offsets %d..%d were not delivered; fetching them again",
                    p,
                    start,
                    rec.offset - 1,
                )
                observer.refetched(p, start, rec.offset)
                await source.seek(p, st.rewind(clock.monotonic()))
                blocked.add(p)
                continue
            # A hole without records: a transactional producer's commit markers.
        if not handler.admit(rec):
            st.parked = True
            st.waiting.append(rec)
            continue
        st.accept(rec)
        out.append(rec)
    for p, n in again.items():
        observer.redelivered(p, n)
    return out
