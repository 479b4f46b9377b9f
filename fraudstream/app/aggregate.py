"""The entity aggregator as a coordinator handler (role ``aggregate``): entity events in
(``<app>-entity-events``), entity states out to the compacted ``<app>-entity-state``.

It runs under its own ``Coordinator`` with ``TransactionalWriters`` whose "changelog" is the
entity-state topic itself: the states an open transaction changed (each at most once per commit)
and the partition's watermark map are written with the input offset in one transaction, and a
partition taken over restores exactly what was committed. Scoring workers follow that topic
whole (``app.entities``). Bad records are counted and dropped (they are internal: a bug, not
input), never allowed to stall a partition.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from fraudstream.app import metrics
from fraudstream.coordinator.ports import Handled, Send
from fraudstream.core import entitylog
from fraudstream.core.records import Record
from fraudstream.errors import FraudStreamError

log = logging.getLogger("fraudstream.aggregate")


class AggregateHandler:
    """Folds entity events per partition; ``None`` is the result of every record."""

    def __init__(self) -> None:
        self.folds: dict[int, entitylog.Fold] = {}

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        fold = entitylog.Fold()
        for key, value in state:
            try:
                fold.restore(key, value)
            except FraudStreamError:
                log.exception(
                    "unreadable entity state in partition %d; it starts afresh", partition
                )
        self.folds[partition] = fold
        metrics.ENTITY_STATES.labels(partition=str(partition)).set(len(fold.states))
        return len(fold.states)

    def admit(self, record: Record) -> bool:
        return True

    def step(self, records: Sequence[Record]) -> Handled[None]:
        bad = 0
        for rec in records:
            try:
                self.folds[rec.partition].absorb(rec.key, entitylog.decode(rec.key, rec.value))
            except (FraudStreamError, ValueError) as exc:
                bad += 1
                log.error(
                    "entity event %s[%d]@%d dropped: %s", rec.topic, rec.partition, rec.offset, exc
                )
        metrics.ENTITY_EVENTS.inc(len(records) - bad)
        if bad:
            metrics.ENTITY_EVENTS_BAD.inc(bad)
        # A watermark is what parked scoring partitions wait for: publish it at once, not at
        # the next interval (a replay's speed is one such round trip per hour of event time).
        hurry = frozenset(r.partition for r in records if r.key == entitylog.WATERMARK_KEY)
        return Handled([], [None] * len(records), hurry)

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        return self.folds[partition].changes()

    def owed(self, partition: int) -> list[Send]:
        return []

    def committed(self, partition: int) -> None:
        fold = self.folds[partition]
        fold.committed()
        metrics.ENTITY_STATES.labels(partition=str(partition)).set(len(fold.states))

    def aborted(self, partition: int) -> None:
        self.folds[partition].aborted()

    def drop(self, partition: int) -> None:
        self.folds.pop(partition, None)
        with contextlib.suppress(KeyError):
            metrics.ENTITY_STATES.remove(str(partition))
