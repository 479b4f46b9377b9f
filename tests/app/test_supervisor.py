"""The supervisor: the one place the worker exits. Typed errors map to exit codes; a failing
background task or guarded call stops the worker; the pause fence refuses writes after a
freeze; and the real exit code is what a process supervisor sees."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from fraudstream.app.supervisor import Supervisor, exit_code
from fraudstream.errors import (
    BrokerError,
    Fenced,
    OutputRefused,
    PartitionUnavailable,
    TransactionLost,
    WorkerFrozen,
)

REPO = Path(__file__).resolve().parents[2]


class Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def supervisor(clock: list[float] | None = None) -> Supervisor:
    def exit_process(code: int) -> None:
        raise Exited(code)

    now = clock if clock is not None else [0.0]
    return Supervisor(pause_limit_s=8.0, exit_process=exit_process, clock=lambda: now[0])


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Fenced("another worker owns partition 1"), 75),
        (WorkerFrozen("frozen for 9s"), 75),
        (TransactionLost("could not abort"), 70),
        (PartitionUnavailable("cannot open partition 0"), 70),
        (OutputRefused("Kafka refused a record"), 70),
        (BrokerError("broker away"), 70),
        (RuntimeError("a bug"), 70),
    ],
)
def test_typed_errors_map_to_exit_codes(error: BaseException, code: int) -> None:
    assert exit_code(error) == code
    with pytest.raises(Exited) as stopped:
        supervisor().stop(error)
    assert stopped.value.code == code


def test_a_background_task_that_fails_stops_the_worker() -> None:
    stopped: list[int] = []
    sup = Supervisor(pause_limit_s=8.0, exit_process=stopped.append)

    async def body() -> None:
        async def fails() -> None:
            raise Fenced("newer owner")

        async def fine() -> None:
            return None

        await asyncio.wait([sup.spawn(fine(), name="fine"), sup.spawn(fails(), name="fails")])
        await asyncio.sleep(0)

    with pytest.raises(SystemExit):
        asyncio.run(body())
    assert stopped == [75]


def test_a_guarded_call_that_fails_stops_the_worker() -> None:
    async def body() -> None:
        async def commit() -> None:
            raise TransactionLost("Kafka aborted 30 transactions in a row")

        await supervisor().guard(commit())

    with pytest.raises(Exited) as stopped:
        asyncio.run(body())
    assert stopped.value.code == 70


def test_the_pause_fence_refuses_writes_after_a_freeze() -> None:
    clock = [100.0]
    sup = supervisor(clock)
    sup.check()  # before the first tick the worker is starting: nothing to refuse
    sup.tick()
    clock[0] += 5.0
    sup.check()
    sup.tick()
    clock[0] += 9.0  # frozen longer than 80 % of a 10 s session timeout
    with pytest.raises(WorkerFrozen, match=r"frozen for 9\.0s"):
        sup.check()
    with pytest.raises(Exited) as stopped:
        sup.tick()
    assert stopped.value.code == 75


def test_the_process_exits_with_the_code() -> None:
    code = (
        "import asyncio\n"
        "from fraudstream.app.supervisor import Supervisor\n"
        "from fraudstream.errors import Fenced\n"
        "async def main():\n"
        "    async def fails():\n"
        "        raise Fenced('a newer owner took partition 0')\n"
        "    Supervisor(pause_limit_s=1.0).spawn(fails(), name='commit')\n"
        "    await asyncio.sleep(5)\n"
        "asyncio.run(main())\n"
        "raise SystemExit(1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 75, done.stderr
    assert "a newer owner took partition 0; exiting with code 75" in done.stderr
