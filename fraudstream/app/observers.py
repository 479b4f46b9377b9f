"""The coordinators' work as metrics and log lines (``ports.Observer``): the scoring path's and
the feedback mover's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fraudstream.app import faust_boundary, metrics

log = logging.getLogger("fraudstream.wiring")
mover_log = logging.getLogger("fraudstream.mover")


class MetricsObserver:
    """The coordinator's work as metrics, log lines and progress for Faust's stall detector
    (``ports.Observer``) for the diverted ``topic`` (transactions, entity events); ``app``
    None: no progress to report (tests)."""

    def __init__(self, app: Any = None, topic: str = "") -> None:
        self.app, self.topic = app, topic

    def _progress(self, partitions: Sequence[int], *, committed: bool) -> None:
        if self.app is not None:
            faust_boundary.scoring_progress(self.app, self.topic, partitions, committed=committed)

    def decided(self, partitions: Sequence[int], events: int) -> None:
        self._progress(partitions, committed=False)

    def opened(self, partition: int, restored: int, seconds: float) -> None:
        log.info(
            "partition %d opened: earlier owners fenced, %d card records restored in %.2fs",
            partition,
            restored,
            seconds,
        )

    def let_go(self, partition: int) -> None:
        pass  # the coordinator logs it; the card-record gauge goes with the handler's drop

    def committed(self, partitions: Sequence[int], events: int, seconds: float) -> None:
        metrics.TXN_COMMIT_SECONDS.observe(seconds)
        metrics.TXN_COMMITS.inc(len(partitions))
        self._progress(partitions, committed=True)
        log.debug("partitions %s committed: %d events", list(partitions), events)

    def aborted(self, partitions: Sequence[int]) -> None:
        metrics.TXN_ABORTS.inc(len(partitions))

    def refetched(self, partition: int, start: int, end: int) -> None:
        metrics.REFETCHES.inc()

    def skipped(self, partition: int, offsets: Sequence[int]) -> None:
        metrics.REVOKED_SKIPPED.inc(len(offsets))
        log.info(
            "partition %d is not held here: left offsets %d..%d to its owner",
            partition,
            min(offsets),
            max(offsets),
        )

    def redelivered(self, partition: int, count: int) -> None:
        log.info("partition %d: %d records delivered again were decided already", partition, count)


class MoverObserver:
    """The mover's coordinator's work as log lines and the shared transaction metrics."""

    def decided(self, partitions: Sequence[int], events: int) -> None:
        pass

    def opened(self, partition: int, restored: int, seconds: float) -> None:
        mover_log.info(
            "feedback partition %d: moving misplaced labels (opened in %.2fs)", partition, seconds
        )

    def let_go(self, partition: int) -> None:
        mover_log.info("feedback partition %d: given away", partition)

    def committed(self, partitions: Sequence[int], events: int, seconds: float) -> None:
        pass

    def aborted(self, partitions: Sequence[int]) -> None:
        metrics.TXN_ABORTS.inc(len(partitions))

    def refetched(self, partition: int, start: int, end: int) -> None:
        metrics.REFETCHES.inc()

    def skipped(self, partition: int, offsets: Sequence[int]) -> None:
        pass  # the partition's new owner moves them

    def redelivered(self, partition: int, count: int) -> None:
        pass
