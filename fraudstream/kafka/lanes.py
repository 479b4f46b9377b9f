"""One thread per partition for its blocking transactional calls (``TransactionalWriters``), and
when such a call counts as stuck."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fraudstream.txn")

# How long a transactional call may take before it is given up (see Lanes).
STUCK_S = 20.0


class Lane:
    """A long-lived thread for one partition's transactional calls, one call at a time.

    A new thread per call cost the event loop ~0.5 ms per commit (``Thread.start`` waits until
    the new thread runs): ~6 % of the loop at 120 commits/s (the API at 16 clients, measured).
    A lane whose call got stuck is retired: it ends once that call returns, if ever, and the
    partition's next call gets a new lane."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            call()

    def submit(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def retire(self) -> None:
        """End the thread after the calls already submitted."""
        self._calls.put(None)


class Stuck(Exception):
    """A transactional call did not return in time; its lane is retired."""


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class Lanes:
    """Each partition's lane, and the rule for a call that does not return.

    librdkafka's transactional calls take a timeout, but after the broker died in the middle
    of one, calls were seen to block past it (``send_offsets_to_transaction`` waits for its
    requests without a bound of its own; py-spy saw 90 s+). A call that has not returned after
    ``STUCK_S`` is given up: its lane is retired and the caller replaces the producer. A call
    given up that returns later says so in the log, with how long it took.

    Tried and measured (2026-11-30, broker fault scenario, librdkafka 2.16.0): giving a call
    up only once it had not returned for ``STUCK_S`` *while the broker answered* a metadata
    request. The calls caught in the outage then returned 2-8 s after the broker came back,
    but later calls hung for 40 s+ with the broker answering (its coordinators still loading)
    and were given up 20 s later than with this bound: recovery 23 / 64 / 102 s in 3 runs,
    against 23 / 23 / 64 s with this bound on the same version. Not kept."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lanes: dict[int, Lane] = {}

    async def call(self, partition: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the partition's lane; raises what it raises, or ``Stuck``."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def call() -> None:
            outcome: BaseException | None = None
            began = time.monotonic()
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
                outcome = exc
            took = time.monotonic() - began
            if took > STUCK_S:
                log.warning(
                    "partition %d: a transaction call given up as stuck returned after %.1fs (%s)",
                    partition,
                    took,
                    "ok" if outcome is None else outcome,
                )
            # A stuck call that ends after the loop has closed has nobody to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, outcome)

        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = Lane(f"{self.prefix}-{partition}")
        lane.submit(call)
        await asyncio.wait({done}, timeout=STUCK_S)
        if done.done():
            return done.result()
        # The call may still end, late: nobody waits for its outcome any more.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._lanes.get(partition) is lane:
            del self._lanes[partition]
        lane.retire()
        raise Stuck(f"a transaction call did not return in {STUCK_S:.0f}s")

    def retire(self, partition: int) -> None:
        if (lane := self._lanes.pop(partition, None)) is not None:
            lane.retire()

    def retire_all(self) -> None:
        for lane in self._lanes.values():
            lane.retire()
        self._lanes.clear()
