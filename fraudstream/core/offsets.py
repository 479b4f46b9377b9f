"""Commit positions for partitions whose records are handled in offset order.

A ``read_committed`` reader of a transactional topic never sees every offset: commit markers
and aborted records take offsets too. Counting acknowledged offsets (what Faust does) stalls on
such holes; a reader that handles each partition in order can instead commit "one past the last
record handled". The one hole that needs a look is the first one after an assignment or a seek,
between the group's committed offset and the first record delivered: it is markers only unless
records were dropped on the way in, so the caller checks it (``to_verify``) before anything past
it may be committed.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class InOrderOffsets(Generic[K]):
    """Per partition: the next offset to commit, held back until the first hole is checked."""

    def __init__(self) -> None:
        self._next: dict[K, int] = {}
        self._first: dict[K, int] = {}

    def handled(self, tp: K, offset: int) -> None:
        """A record was handled and its outputs are on their way (flushed before any commit)."""
        if tp not in self._next:
            self._first[tp] = offset
        self._next[tp] = offset + 1

    def reset(self, tp: K) -> None:
        """The reader moved (assignment, seek): the next record handled is a first one again."""
        self._next.pop(tp, None)
        self._first.pop(tp, None)

    def clear(self) -> None:
        """After a rebalance every partition starts over from its committed offset."""
        self._next.clear()
        self._first.clear()

    def position(self, tp: K) -> int | None:
        """The offset after the last record handled since the last reset (None: none)."""
        return self._next.get(tp)

    def to_verify(self) -> dict[K, int]:
        """Partitions whose first record since a reset is not checked yet -> its offset."""
        return dict(self._first)

    def verified(self, tp: K, first: int) -> None:
        """Nothing readable is missing before ``first``: commits may pass it."""
        if self._first.get(tp) == first:
            del self._first[tp]

    def committable(self, tp: K, committed: int | None) -> int | None:
        """The offset to commit now, or None (nothing new, or the first hole is unchecked)."""
        if tp in self._first:
            return None
        nxt = self._next.get(tp)
        if nxt is None or (committed is not None and nxt <= committed):
            return None
        return nxt
