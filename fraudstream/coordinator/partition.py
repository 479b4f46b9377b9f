"""One owned input partition, as one object: where its records stand, what its open transaction
holds, what waits, and how its commits go. A partition taken again later is a new object, so
nothing of an earlier ownership can leak into the next one."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from fraudstream.core.records import Record
from fraudstream.errors import PartitionMoved

#: A refetch (a seek back over a hole) that has not delivered in this long is asked for again.
REFETCH_AGAIN_S = 5.0


class Place(enum.Enum):
    """Where a fetched record stands against its partition's next offset."""

    NEXT = "next"  # the record to decide now
    DECIDED = "decided"  # below the next offset: delivered again, and already decided
    REFETCHING = "refetching"  # past the offset sought back to: the refetch brings it again
    AHEAD = "ahead"  # past the next offset: a hole, which the caller probes


class PartitionState:
    """Everything known about one owned partition of the input topic.

    ``next_offset`` means: every record before it is decided, in a committed transaction, in the
    one committing (``sealed``) or in the open one (``inflight``), whose records are decided
    again from memory if Kafka aborts them.
    So a record below it is never decided again (Faust delivers records twice around
    rebalances, and the per-card dedup record forgets ids past its window), and a record past it
    waits until the hole before it is known to hold no record."""

    def __init__(self, number: int, committed: int | None, now: float) -> None:
        self.number = number
        self.next_offset = committed  # None: nothing committed yet, take the first record
        self.committed_offset = committed  # the input position last committed
        self.inflight: list[Record] = []  # the open transaction's records, in order
        self.waiting: list[Record] = []  # records that wait: a commit, a refetch, the handler
        self.rewinding: tuple[int, float] | None = None  # (offset sought back to, when)
        self.parked = False  # the handler refused a record: wait for Coordinator.wake
        self.hurry = False  # the handler wants the open transaction committed now
        self.dirty = False  # something was written into the open transaction
        self.began = now  # when the open transaction began
        self.committing: asyncio.Task[None] | None = None  # the commit under way, if any
        self.retrying = False  # Kafka aborted the commit under way once: it is being retried
        self.sealed: list[Record] = []  # the records the commit under way carries
        self.sealed_offset = committed  # the input position that commit carries
        self.answers: dict[int, Any] = {}  # id(request record) -> its result, until committed
        self._next_commit: list[asyncio.Future[None]] = []  # the open transaction's waiters
        self._sealed_commit: list[asyncio.Future[None]] = []  # the commit under way's

    # --- where records stand --------------------------------------------------------------

    def place(self, offset: int) -> Place:
        nxt = self.next_offset
        if nxt is not None and offset < nxt:
            return Place.DECIDED
        if self.rewinding is not None:
            if offset > self.rewinding[0]:
                return Place.REFETCHING
            self.rewinding = None  # the refetch arrived (the target is the next offset)
        if nxt is not None and offset > nxt:
            return Place.AHEAD
        return Place.NEXT

    def rewind(self, now: float) -> int:
        """A hole before a record holds records: fetch again from the next offset."""
        assert self.next_offset is not None
        self.rewinding = (self.next_offset, now)
        return self.next_offset

    def refetch_overdue(self, now: float) -> int | None:
        """The offset to seek to again when the refetch has not come in time (it was lost too)."""
        if self.rewinding is None or now - self.rewinding[1] <= REFETCH_AGAIN_S:
            return None
        self.rewinding = (self.rewinding[0], now)
        return self.rewinding[0]

    def accept(self, record: Record) -> None:
        """``record`` goes into the open transaction (a hole before it holds no record)."""
        self.inflight.append(record)
        if record.from_log:
            self.next_offset = max(self.next_offset or 0, record.offset + 1)

    def accept_side(self, record: Record) -> None:
        """A record of a second input of this partition (``Coordinator.handle_side``) goes into
        the open transaction; its position is the handler's, not ``next_offset``."""
        self.inflight.append(record)

    # --- the open transaction ---------------------------------------------------------------

    def wrote(self) -> None:
        self.dirty = True

    def has_work(self) -> bool:
        return self.dirty or bool(self.inflight)

    def busy(self, overlaps: bool) -> asyncio.Task[None] | None:
        """The commit that new records must wait for, if any: the one under way, unless the
        writers take records while it runs (``overlaps``: they go into the next transaction)
        and it is not being retried (a commit that keeps failing, the broker away, say, would
        otherwise have ever more records to decide again at each attempt)."""
        if overlaps and not self.retrying:
            return None
        return self.committing

    def can_take(self, overlaps: bool) -> bool:
        """Records can go in now (``busy``) and the handler has not refused one."""
        return self.busy(overlaps) is None and not self.parked

    def due(self, now: float, interval_s: float) -> bool:
        if self.committing is not None or not self.has_work():
            return False
        # A parked partition commits at once: what it wrote must reach its readers, whose
        # progress may be what it waits for.
        return self.parked or self.hurry or now - self.began >= interval_s

    def next_commit(self) -> asyncio.Future[None]:
        """Done when the open transaction is committed; fails if the partition is let go."""
        if not self._next_commit:
            self._next_commit.append(asyncio.get_running_loop().create_future())
        return self._next_commit[-1]

    def seal(self, now: float) -> int | None:
        """A commit begins: the open transaction's records are what it carries, and the next
        transaction begins ``now`` (commits are due every interval however long they take).
        Returns the input position to commit (None: it has not moved)."""
        self.sealed += self.inflight
        self.inflight = []
        self.sealed_offset = self.next_offset
        self._sealed_commit += self._next_commit
        self._next_commit = []
        self.dirty = False
        self.hurry = False
        self.began = now
        return None if self.sealed_offset == self.committed_offset else self.sealed_offset

    def unseal(self) -> list[Record]:
        """The commit under way did not commit: its records are the open transaction's again,
        before those decided meanwhile; returns them all, in order (to decide again after an
        abort, or to commit next time)."""
        self.inflight = self.sealed + self.inflight
        self.sealed = []
        self._next_commit = self._sealed_commit + self._next_commit
        self._sealed_commit = []
        self.dirty = self.dirty or bool(self.inflight)
        return self.inflight

    def committed(self) -> None:
        """The commit under way (``seal``) committed."""
        self.committed_offset = self.sealed_offset
        self.retrying = False
        self.sealed = []
        for fut in self._sealed_commit:
            if not fut.done():
                fut.set_result(None)
        self._sealed_commit = []

    def revoked(self) -> None:
        """The partition goes to another worker: what its open transaction held is undone."""
        waiters = self._sealed_commit + self._next_commit
        self._sealed_commit, self._next_commit = [], []
        for fut in waiters:
            if fut.done():
                continue
            fut.set_exception(
                PartitionMoved(
                    f"partition {self.number} was given to another worker before this "
                    "transaction committed; retry"
                )
            )
