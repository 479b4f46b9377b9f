"""The worker's garbage collector: what lives for the whole run kept out of its way, and its
pauses measured.

A worker's heap is mostly long-lived: Faust, the models' trees, the card records. Python's
cyclic collector walks every tracked object of a generation on each of its passes, so with the
defaults (a young pass every 700 net allocations) a worker deciding 1,000 transactions a second
spent ~10 % of its event loop in the collector and stopped for ~250 ms on each full pass
(measured: docs/benchmark.md, "The collector"). Settling freezes what exists once the worker
is ready (and again after each model swap): those objects move to the permanent generation,
which no pass walks; a young pass runs every ``YOUNG_THRESHOLD`` net allocations. Reference
counting frees acyclic garbage as before; cycles are still collected, only less often.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from fraudstream.app import metrics

log = logging.getLogger("fraudstream.heap")

#: Net allocations between two young passes (CPython's default: 700). A young pass walks at
#: most this many objects: a few ms.
YOUNG_THRESHOLD = 20_000
#: Young passes between two middle passes, and middle passes between two full ones (CPython
#: also waits until the objects to walk grew by a quarter since the last full pass).
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 10


class Heap:
    """Collector settings and pause metrics for one process; ``settle`` when a lot of
    long-lived objects were just made (start-up done, models swapped)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
        gc.callbacks.append(self._observe)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._observe)
            self._installed = False

    def settle(self, why: str) -> None:
        """Collect what is garbage now, then freeze the rest: later passes skip it."""
        t0 = self._clock()
        gc.collect()
        gc.freeze()
        log.info(
            "heap settled (%s): %d objects frozen in %.0f ms",
            why,
            gc.get_freeze_count(),
            (self._clock() - t0) * 1000,
        )

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector itself, in whichever thread allocated: keep it cheap.
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            metrics.GC_PAUSE.labels(generation=str(info["generation"])).observe(
                self._clock() - self._started
            )
            self._started = None


class Settler:
    """Settles the heap once the worker first is ready, then after each swap of the models."""

    def __init__(
        self, heap: Heap, ready: Callable[[], bool], models: Callable[[], frozenset[int]]
    ) -> None:
        self._heap = heap
        self._ready = ready
        self._models = models  # the identities of the models in service
        self._settled_with: frozenset[int] | None = None

    def tick(self) -> None:
        if not self._ready():
            return
        current = self._models()
        if current == self._settled_with:
            return
        self._heap.settle("ready" if self._settled_with is None else "models changed")
        self._settled_with = current
