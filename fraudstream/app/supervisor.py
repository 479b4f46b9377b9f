"""The one place that ends the worker: fatal conditions anywhere are raised as typed errors
(``fraudstream.errors.Fatal``, ``Fenced``), and the tasks that run the worker's work report them
here. Exiting without writing more, and without Faust's graceful shutdown (which would commit),
leaves every uncommitted event to be decided again from the committed offsets by a restarted
worker (its process supervisor, Kubernetes or systemd, restarts it).

Exit codes: 75 (EX_TEMPFAIL) when another worker took over (fenced) or this one was frozen past
its session timeout; 70 (EX_SOFTWARE) for everything else.

It also keeps the pause fence: a process frozen (SIGSTOP, a VM pause, a swap storm) for most of
the consumer session timeout has likely lost its partitions, and anything it wrote now would
duplicate the new owner's work: ``check`` refuses, before every write."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

from fraudstream.errors import Fatal, Fenced, WorkerFrozen

log = logging.getLogger("fraudstream.supervisor")

T = TypeVar("T")
FENCED_EXIT = 75


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, Fatal):
        return exc.exit_code
    if isinstance(exc, Fenced):
        return FENCED_EXIT
    return Fatal.exit_code


class Supervisor:
    def __init__(
        self,
        *,
        pause_limit_s: float,
        exit_process: Callable[[int], Any] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pause_limit_s = pause_limit_s
        self._exit = exit_process
        self._clock = clock
        self._last_tick: float | None = None  # set by the first tick, once the worker runs

    # --- the pause fence ----------------------------------------------------------------------

    def check(self) -> None:
        """Raise ``WorkerFrozen`` if the process was frozen for most of its session timeout."""
        if self._last_tick is None:
            return
        frozen = self._clock() - self._last_tick
        if frozen > self.pause_limit_s:
            raise WorkerFrozen(
                f"this worker was frozen for {frozen:.1f}s (limit {self.pause_limit_s:.1f}s, 80% "
                "of the session timeout): its partitions' new owner decides these records"
            )

    def tick(self) -> None:
        """Timer: the process is running."""
        try:
            self.check()
        except WorkerFrozen as exc:
            self.stop(exc)
        self._last_tick = self._clock()

    # --- running the worker's work --------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background; if it fails, the worker stops."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"fraudstream-{name}")
        task.add_done_callback(self._watch)
        return task

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.stop(exc)

    async def guard(self, work: Awaitable[T]) -> T:
        """Await ``work`` for a caller that cannot stop the worker itself (a Faust timer or
        hook); if it fails, the worker stops."""
        try:
            return await work
        except Exception as exc:  # noqa: BLE001 - every failure here ends the worker
            self.stop(exc)

    def stop(self, exc: BaseException) -> NoReturn:
        code = exit_code(exc)
        if isinstance(exc, Fatal | Fenced):
            log.critical("%s; exiting with code %d without writing more", exc, code)
        else:
            log.critical(
                "unexpected failure; exiting with code %d without writing more (a restart "
                "decides the uncommitted events again)",
                code,
                exc_info=exc,
            )
        logging.shutdown()
        self._exit(code)
        raise SystemExit(code)  # not reached with os._exit; a test's exit function may return
