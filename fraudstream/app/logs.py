"""Logging: plain or JSON lines, with card-number-shaped digits and secrets scrubbed from every
record, whoever logs it (our code, Faust, aiokafka), and from whatever native code writes
straight to stderr (librdkafka's own log lines bypass Python logging).

At DEBUG level Faust and aiokafka log whole message keys and values (``send: topic=... k=...
v=...``, ``Sending (key=... value=...)``); the scrub filter sits on the one root handler, so it
sees every record that any logger propagates, and it scrubs the message, its arguments, and the
exception and stack text.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import fcntl
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import IO, Any

from fraudstream.core.redact import redact

_PUMP_ATTR = "_fraudstream_stderr_pump"


class ScrubFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def scrub(self, text: str) -> str:
        # Secrets first: a numeric secret must not be half-replaced by the digit redaction.
        for secret in self.secrets:
            text = text.replace(secret, "[redacted-secret]")
        return redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not break logging
            text = str(record.msg)
        record.msg, record.args = self.scrub(text), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: render the traceback once, scrubbed.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


#: (logger, how its message template starts) -> (the level it is logged at, and at most once
#: per this many seconds; 0: every time). What a worker under a backlog says all the time and
#: an operator cannot act on: an overlapping timer (a commit round longer than its interval),
#: Faust's producer buffer filling (back-pressure doing its job), timer drift.
CHATTER: dict[tuple[str, str], tuple[int, float]] = {
    ("mode.timers", "Timer %s is overlapping"): (logging.INFO, 60.0),
    ("mode.timers", "Timer %s woke up too late"): (logging.DEBUG, 0.0),
    ("mode.timers", "Timer %s woke up too early"): (logging.DEBUG, 0.0),
    ("faust.transport.producer", "producer buffer full"): (logging.INFO, 60.0),
    ("faust.transport.producer", "producer flush took"): (logging.DEBUG, 0.0),
}


class Calm(logging.Filter):
    """Logs ``CHATTER`` at its level, at most once per its interval (the line then says how
    many like it were left out); WARNING stays for what an operator must act on."""

    def __init__(
        self,
        level: int,
        rules: dict[tuple[str, str], tuple[int, float]] = CHATTER,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__()
        self.level = level
        self.rules = rules
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._left_out: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        key = next(
            (k for k in self.rules if record.name == k[0] and template.startswith(k[1])), None
        )
        if key is None:
            return True
        level, every = self.rules[key]
        if level < self.level:
            return False
        record.levelno, record.levelname = level, logging.getLevelName(level)
        if every <= 0:
            return True
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < every:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        self._last[key] = now
        left_out = self._left_out.pop(key, 0)
        if left_out:
            record.msg = f"{template} ({left_out} more like this in the last {every:.0f}s)"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("model_version", "partition", "offset"):
            if hasattr(record, key):
                body[key] = getattr(record, key)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body["exc"] = redact(record.exc_text)
        if record.stack_info:
            body["stack"] = redact(record.stack_info)
        return json.dumps(body, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        # A record re-emitted from the stderr pump must not fail back into the pump forever.
        if getattr(record, "from_stderr", False):
            return
        super().handleError(record)


# librdkafka's own log line: "%<syslog level>|<unix time>|<facility>|<client>| <message>"
_RDKAFKA_LINE = re.compile(r"^%(\d)\|[\d.]+\|([^|]*)\|([^|]*)\|\s?(.*)$")
_SYSLOG_LEVELS = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}


#: The stderr pipe's size: room for a burst of native log lines while the pump waits for the GIL.
PIPE_BYTES = 1 << 20


class _PatientStderr(io.TextIOBase):
    """``sys.stderr`` over the non-blocking pipe: a write waits while the pipe is full (the pump
    drains it meanwhile: sleeping releases the GIL) rather than failing."""

    encoding = "utf-8"

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = memoryview(text.encode("utf-8", errors="backslashreplace"))
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                time.sleep(0.005)
        return len(text)


class _StderrPump:
    """Point file descriptor 2 at a pipe; turn every line written there into a log record.

    Native libraries (librdkafka) and anything else writing to stderr directly would otherwise
    bypass both the scrubbing and the JSON format. Records go straight to ``handler``, which
    writes to a duplicate of the original stderr, so nothing loops back into the pipe.
    """

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        sys.stderr.flush()
        self.saved_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # Linux only, and within the system's pipe-max-size
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        # librdkafka writes to fd 2 from its own threads, some while holding its locks, and the
        # pump needs the GIL to drain the pipe: a thread holding the GIL in a librdkafka call
        # that waits for such a thread would wait for ever once the pipe is full (a worker's
        # event loop froze so after a broker restart). So a full pipe drops native lines
        # instead of blocking their writer; Python's own writes wait (``_PatientStderr``).
        os.set_blocking(write_fd, False)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stderr = _PatientStderr(2)
        self.read_fd = read_fd
        self.thread = threading.Thread(target=self._run, name="stderr-pump", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def original_stream(self) -> IO[str]:
        return os.fdopen(
            os.dup(self.saved_fd), "w", buffering=1, encoding="utf-8", errors="replace"
        )

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        match = _RDKAFKA_LINE.match(line)
        if match:
            level = _SYSLOG_LEVELS.get(int(match.group(1)), logging.WARNING)
            name, msg = "librdkafka", f"{match.group(3)} {match.group(2)}: {match.group(4)}"
        else:
            level, name, msg = logging.WARNING, "stderr", line
        record = logging.LogRecord(name, level, "stderr", 0, msg, None, None)
        record.from_stderr = True
        if logging.getLogger(name).isEnabledFor(level):
            self.handler.handle(record)

    def _run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                self._emit(raw.decode("utf-8", errors="replace").rstrip("\r"))
        if buf:
            self._emit(buf.decode("utf-8", errors="replace"))
        os.close(self.read_fd)

    def close(self) -> None:
        """Give fd 2 back and drain what is left in the pipe (at exit)."""
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(self.saved_fd, 2)  # the pipe's last writer goes: the reader sees EOF
        self.thread.join(timeout=2.0)


def _quiet_faust_terminal() -> None:
    """Faust's start-up spinner writes cursor escapes ("\\b\\x1b[?25h") to stdout at the end of
    start-up even when stdout is no terminal, which breaks one-record-per-line output."""
    try:
        from faust.utils.terminal import Spinner
    except ImportError:  # pragma: no cover - faust is a dependency of the worker only
        return
    Spinner.bell = ""
    Spinner.cursor_hide = ""
    Spinner.cursor_show = ""


def enable_stack_dumps(sig: int = signal.SIGQUIT) -> None:
    """``kill -QUIT <pid>`` writes every thread's Python stack to the log's own stream (as a
    JVM does): where a worker that stopped making progress is stuck. Not SIGUSR1/2: Faust's
    worker takes those (on the event loop, which a stuck worker no longer runs). Not through
    the stderr pipe, which a stuck process may no longer drain."""
    pump: _StderrPump | None = getattr(sys, _PUMP_ATTR, None)
    stream = pump.original_stream() if pump is not None else sys.stderr
    faulthandler.register(sig, file=stream, all_threads=True)


def stderr_pump() -> _StderrPump | None:
    """The process's stderr pump, once ``setup_logging`` has captured fd 2."""
    pump: _StderrPump | None = getattr(sys, _PUMP_ATTR, None)
    return pump


def setup_logging(
    level: str, as_json: bool, secrets: list[str], *, capture_stderr: bool = True
) -> None:
    """Configure the root logger; with ``capture_stderr`` also route fd 2 through it."""
    pump: _StderrPump | None = getattr(sys, _PUMP_ATTR, None)
    if capture_stderr and pump is None:
        pump = _StderrPump(logging.NullHandler())  # handler set below
        setattr(sys, _PUMP_ATTR, pump)
    stream = pump.original_stream() if pump is not None else sys.stderr
    handler = _Handler(stream)
    handler.addFilter(Calm(logging.getLevelName(level.upper())))
    handler.addFilter(ScrubFilter(secrets))
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if pump is not None:
        pump.handler = handler
    logging.captureWarnings(True)
    _quiet_faust_terminal()
