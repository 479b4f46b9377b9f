"""Per-card records of the partitions a worker owns, split by what Kafka has committed.

Each input partition is one unit of exactly-once work: its decisions, its card records and its
consumer offset are committed in one Kafka transaction. ``committed`` mirrors what that
partition's changelog holds (read back with ``read_committed``); ``pending`` holds what the open
transaction has changed. When a commit begins, pending is sealed (``seal``): what is decided
while it runs goes into a new pending layer, read on top of the sealed one (at least once decides
during commits). The commit folds the sealed layer into committed; an abort drops both, so the
transactions' events can be decided again from exactly the state they first saw.
"""

from __future__ import annotations

from collections.abc import Iterable

from fraudstream.core.engine import CardRecord


class CardStore:
    def __init__(self) -> None:
        self._committed: dict[int, dict[str, CardRecord]] = {}
        self._pending: dict[int, dict[str, CardRecord]] = {}
        self._sealed: dict[int, dict[str, CardRecord]] = {}

    def partitions(self) -> set[int]:
        return set(self._committed)

    def owns(self, partition: int) -> bool:
        return partition in self._committed

    def load(self, partition: int, records: Iterable[tuple[str, CardRecord | None]]) -> int:
        """Take ``partition`` with the records restored from its changelog, in log order (a
        later record for a card replaces an earlier one; ``None`` is a deletion)."""
        table: dict[str, CardRecord] = {}
        for card, rec in records:
            if rec is None:
                table.pop(card, None)
            else:
                table[card] = rec
        self._committed[partition] = table
        self._pending[partition] = {}
        self._sealed[partition] = {}
        return len(table)

    def get(self, partition: int, card: str) -> CardRecord | None:
        rec = self._pending[partition].get(card)
        if rec is not None:
            return rec
        rec = self._sealed[partition].get(card)
        if rec is not None:
            return rec
        return self._committed[partition].get(card)

    def put(self, partition: int, card: str, rec: CardRecord) -> None:
        self._pending[partition][card] = rec

    def pending(self, partition: int) -> dict[str, CardRecord]:
        """The records the open transaction changed (written to the changelog at commit)."""
        return self._pending.get(partition, {})

    def seal(self, partition: int) -> None:
        """A commit begins: it carries what is pending now; later changes are the next one's."""
        self._sealed[partition].update(self._pending[partition])
        self._pending[partition] = {}

    def unseal(self, partition: int) -> None:
        """The commit was refused, the partition still held: the next commit carries both."""
        self._pending[partition] = {**self._sealed[partition], **self._pending[partition]}
        self._sealed[partition] = {}

    def commit(self, partition: int) -> None:
        """The sealed layer committed."""
        self._committed[partition].update(self._sealed[partition])
        self._sealed[partition] = {}

    def abort(self, partition: int) -> None:
        self._pending[partition] = {}
        self._sealed[partition] = {}

    def drop(self, partition: int) -> None:
        """The partition went to another worker: forget it (its changelog has the truth)."""
        self._committed.pop(partition, None)
        self._pending.pop(partition, None)
        self._sealed.pop(partition, None)

    def size(self, partition: int) -> int:
        return len(self._committed.get(partition, {}))
