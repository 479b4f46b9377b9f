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


_STALLED_PUMP = """
import faulthandler, fcntl, logging, os, socket, sys, termios, time, array
from fraudstream.app.logs import setup_logging, stderr_pump
setup_logging("INFO", False, [])
pump = stderr_pump()
faulthandler.dump_traceback_later(25, exit=True, file=pump.original_stream())
handler = logging.getLogger().handlers[0]
handler.acquire()  # the pump thread now waits for the handler: nothing drains the pipe
def queued():
    buf = array.array("i", [0])
    fcntl.ioctl(pump.read_fd, termios.FIONREAD, buf)
    return buf[0]
"""


def _run_stalled(body: str, *, stderr: list[str] | None = None) -> str:
    import subprocess
    import sys

    got = subprocess.run(
        [sys.executable, "-c", _STALLED_PUMP + body],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    if stderr is not None:
        stderr.append(got.stderr)
    return got.stdout


def test_native_code_writing_to_stderr_never_waits_for_the_log_pump() -> None:
    # librdkafka writes its log lines to fd 2 from its own threads, some while holding its
    # locks; the pump that turns them into records needs the GIL. A worker's event loop froze
    # (broker restart, 2 of 24 runs) holding the GIL in a librdkafka call that waited for a
    # librdkafka thread blocked on a full stderr pipe. A full pipe now drops native lines.
    out = _run_stalled(
        "chunk = (b'x' * 127 + b'\\n') * 512\n"  # 64 KiB of lines
        "dropped = 0\n"
        "for _ in range(64):\n"  # 4 MiB: more than any pipe holds
        "    try:\n"
        "        os.write(2, chunk)\n"
        "    except BlockingIOError:\n"
        "        dropped += 1\n"
        "print('dropped' if dropped else 'kept all', queued())\n"
    )
    assert out.startswith("dropped")


def test_a_librdkafka_call_holding_the_gil_returns_while_the_log_pump_is_stalled() -> None:
    # The freeze itself: Consumer.assignment() keeps the GIL while librdkafka's main thread
    # serves it; that thread logs (debug) into the stalled pump's pipe.
    out = _run_stalled(
        "from confluent_kafka import Consumer\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "conf = {'bootstrap.servers': f'127.0.0.1:{port}', 'group.id': 'g', 'debug': 'all',\n"
        "        'reconnect.backoff.ms': 10, 'reconnect.backoff.max.ms': 50}\n"
        "consumers = [Consumer(conf) for _ in range(2)]\n"
        "for c in consumers: c.subscribe(['t'])\n"
        "size = fcntl.fcntl(pump.read_fd, fcntl.F_GETPIPE_SZ)\n"
        "t = time.monotonic()\n"
        "while queued() < size * 0.9 and time.monotonic() - t < 15: time.sleep(0.05)\n"
        "time.sleep(0.5)\n"
        "full = queued() >= size * 0.9\n"
        "for _ in range(200):\n"
        "    for c in consumers: c.assignment()\n"
        "print('returned', 'with a full pipe' if full else 'before the pipe filled')\n"
        "os._exit(0)\n"
    )
    assert out.strip() == "returned with a full pipe"


def test_pythons_own_stderr_writes_wait_for_a_stalled_pump_and_lose_nothing() -> None:
    logged: list[str] = []
    out = _run_stalled(
        "import threading\n"
        "done = []\n"
        "def talk():\n"
        "    sys.stderr.write(('y' * 127 + '\\n') * 16384)\n"  # 2 MiB: more than the pipe holds
        "    done.append(True)\n"
        "t = threading.Thread(target=talk)\n"
        "t.start()\n"
        "time.sleep(1.0)\n"
        "waited = not done\n"
        "handler.release()\n"
        "t.join(20)\n"
        "print('waited, then wrote' if waited and done else f'waited={waited} done={done}')\n",
        stderr=logged,
    )
    assert out.strip() == "waited, then wrote"
    assert logged[0].count("WARNING stderr: " + "y" * 127) == 16384
