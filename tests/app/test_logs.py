"""Quiet logs (issue 19): known chatter is demoted or rate-limited, everything else passes."""

from __future__ import annotations

import logging

from fraudstream.app.logs import Calm


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_overlapping_timer_is_info_at_most_once_a_minute_and_says_how_many_were_left_out() -> (
    None
):
    clock = Clock()
    calm = Calm(logging.INFO, clock=clock)
    first = _record("mode.timers", logging.WARNING, "Timer %s is overlapping (x)", "commit")
    assert calm.filter(first)
    assert first.levelno == logging.INFO
    assert first.levelname == "INFO"
    for _ in range(5):
        clock.now += 1
        assert not calm.filter(_record("mode.timers", logging.WARNING, "Timer %s is overlapping"))
    clock.now = 61
    again = _record("mode.timers", logging.WARNING, "Timer %s is overlapping", "commit")
    assert calm.filter(again)
    assert "5 more like this in the last 60s" in again.getMessage()


def test_timer_drift_is_debug_and_dropped_at_info() -> None:
    calm = Calm(logging.INFO, clock=Clock())
    assert not calm.filter(_record("mode.timers", logging.INFO, "Timer %s woke up too late, x"))
    debug = Calm(logging.DEBUG, clock=Clock())
    late = _record("mode.timers", logging.INFO, "Timer %s woke up too late, x")
    assert debug.filter(late)
    assert late.levelno == logging.DEBUG


def test_faust_producer_buffer_full_is_rate_limited_info() -> None:
    calm = Calm(logging.INFO, clock=Clock())
    full = _record("faust.transport.producer", logging.WARNING, "producer buffer full size 1000")
    assert calm.filter(full)
    assert full.levelno == logging.INFO
    assert not calm.filter(
        _record("faust.transport.producer", logging.WARNING, "producer buffer full size 1001")
    )


def test_everything_else_passes_unchanged() -> None:
    calm = Calm(logging.INFO, clock=Clock())
    for name, level, msg in [
        ("fraudstream.coordinator", logging.WARNING, "partition 1: offsets were not delivered"),
        ("mode.timers", logging.WARNING, "Timer x is stuck"),
        ("other", logging.WARNING, "Timer %s is overlapping"),  # another logger's words
        ("faust.transport.drivers.aiokafka", logging.ERROR, "Stream stopped processing"),
    ]:
        rec = _record(name, level, msg)
        assert calm.filter(rec)
        assert rec.levelno == level


def test_sigquit_writes_every_threads_stack_to_the_log_stream() -> None:
    # A worker that stopped making progress shows where it is stuck (the fault suite asks every
    # worker for its stacks before stopping it).
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from fraudstream.app.logs import enable_stack_dumps, setup_logging\n"
        "setup_logging('INFO', False, [])\n"
        "enable_stack_dumps()\n"
        "def parked_here():\n"
        "    os.kill(os.getpid(), signal.SIGQUIT)\n"
        "    time.sleep(0.2)\n"
        "parked_here()\n"
    )
    got = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Current thread" in got.stderr
    assert "parked_here" in got.stderr
    assert "logs.py" in got.stderr  # the other thread: the stderr pump, in its read loop
