"""The fault suite's worker processes: `python -m fraudstream worker` children, started, signalled,
stopped, and read back through their logs.

The workers run with a 10 s Kafka session timeout (Faust's default is 60 s; see
:data:`WORKER_ENV`): a SIGKILLed or frozen member is evicted after that long, which bounds the
recovery after SIGKILL and defines "past its session timeout" for SIGSTOP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fraudstream.kafka.jvm import free_port
from fraudstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]

SESSION_TIMEOUT_S = 10.0
# Faust reads these from the environment (its own settings, not FRAUD_*).
WORKER_ENV = {
    "BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S),
    "BROKER_HEARTBEAT_INTERVAL": "1.0",
}


def worker_env(settings: Settings, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    for name, raw in settings.model_dump().items():
        if raw is None:
            continue
        value = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
        env[f"FRAUD_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    for name, value in extra.items():
        env[f"FRAUD_{name.upper()}"] = str(value)
    env.update(WORKER_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class WorkerProc:
    """One `python -m fraudstream worker`. A restart reuses the name, so the same state folder."""

    def __init__(self, settings: Settings, name: str, tmp: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        self.env = worker_env(settings, web_port=self.port, data_dir=tmp / f"{name}-data")
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []

    def start(self) -> WorkerProc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "worker"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> str:
        """ "running", or how it ended: a native crash shows as "killed by SIGSEGV" (the broker
        scenario's silent workers were librdkafka crashing, not a stuck event loop)."""
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        if code is None:
            return "running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if self.ready():
                return time.monotonic() - t0
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready in {timeout:.0f}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.exit_codes.append(self.proc.wait())

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused worker cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.exit_codes.append(int(self.proc.returncode))
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0


@contextlib.contextmanager
def workers(*procs: WorkerProc) -> Iterator[None]:
    try:
        yield
    finally:
        for w in procs:
            # Every thread's stack into its log first (fraudstream.app.logs.enable_stack_dumps):
            # where a worker that stopped deciding was stuck.
            with contextlib.suppress(Exception):
                if w.alive():
                    w.signal(signal.SIGQUIT)
        time.sleep(1.0)
        for w in procs:
            with contextlib.suppress(Exception):
                w.stop(timeout=30)
