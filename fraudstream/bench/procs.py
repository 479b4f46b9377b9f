"""Contender processes: started, watched (readiness, peak RSS, CPU time) and stopped."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraudstream.bench.common import REPO

try:
    import psutil
except ImportError:  # the optional `bench` extra
    psutil = None


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # one XGBoost/OpenMP thread per process, for every contender
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class Proc:
    """One contender process. ``ready_at`` is the wall time it said it owns partitions: the
    ``READY`` line of the bench's own contenders, or the worker's /readyz turning 200."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        web_port: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = child_env(env)
        self.web_port = web_port
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_at: float | None = None
        self.started_at = 0.0
        self.peak_rss = 0
        self.rss_samples: list[tuple[float, int]] = []
        self.cpu_s: float | None = None
        self.cpu_samples: list[tuple[float, float]] = []  # (wall time, CPU seconds so far)
        self._ps = None
        self._reader: threading.Thread | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=log
        )
        if psutil is not None:
            try:
                self._ps = psutil.Process(self.proc.pid)
            except psutil.Error:
                self._ps = None
        self._reader = threading.Thread(target=self._read_stdout, args=(log,), daemon=True)
        self._reader.start()
        return self

    def _read_stdout(self, log: object) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"READY") and self.ready_at is None:
                self.ready_at = time.time()
            log.write(line)  # type: ignore[attr-defined]
            log.flush()  # type: ignore[attr-defined]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> int:
        if self._ps is None or not self.alive():
            return 0
        try:
            rss = int(self._ps.memory_info().rss)
            cpu = self._ps.cpu_times()
            self.cpu_s = float(cpu.user + cpu.system)
        except psutil.Error:
            return 0
        self.cpu_samples.append((time.time(), self.cpu_s))
        self.peak_rss = max(self.peak_rss, rss)
        self.rss_samples.append((time.time(), rss))
        return rss

    def cpu_at(self, when: float) -> float | None:
        """CPU seconds spent by wall time ``when``, interpolated between samples."""
        return _interpolate(self.cpu_samples, when)

    def main_thread_cpu_s(self) -> float | None:
        """CPU seconds of the process's main thread (a worker's decide loop runs there)."""
        if self._ps is None or not self.alive():
            return None
        try:
            for t in self._ps.threads():
                if t.id == self._ps.pid:
                    return float(t.user_time + t.system_time)
        except psutil.Error:
            return None
        return None

    def poll_ready(self) -> bool:
        """True once ready; for a worker, asks /readyz (a 200 means: models loaded, partitions
        assigned, no rebalance in progress)."""
        if self.ready_at is not None:
            return True
        if self.web_port is None:
            return False
        try:
            url = f"http://127.0.0.1:{self.web_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200 and json.loads(r.read()).get("ready"):
                    self.ready_at = time.time()
                    return True
        except (OSError, ValueError, urllib.error.HTTPError):
            pass
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        self.sample()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)


def _interpolate(samples: list[tuple[float, float]], when: float) -> float | None:
    """Linear interpolation in (time, value) samples sorted by time; clamped at the ends."""
    if not samples:
        return None
    if when <= samples[0][0]:
        return samples[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (when - t0) / (t1 - t0)
    return samples[-1][1]


class Sampler:
    """Samples RSS and CPU time of every registered process, and the CPU of the broker and the
    machine, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.25, broker: Any = None) -> None:
        self.interval = interval
        self.procs: list[Proc] = []
        self.broker = broker
        self.snapshots: list[CpuSnapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, p: Proc) -> None:
        self.procs.append(p)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            snap = CpuSnapshot.take(self.broker)
            if snap is not None:
                self.snapshots.append(snap)
            for p in list(self.procs):
                if p.alive():
                    p.sample()


def broker_process(bootstrap: str, pid: int | None = None) -> Any:
    """The broker's process (psutil), by ``pid`` or else by the loopback port it listens on;
    None when psutil is missing or the broker is not on this machine."""
    if psutil is None:
        return None
    try:
        if pid is None:
            host, _, port = bootstrap.split(",", maxsplit=1)[0].rpartition(":")
            if host not in ("127.0.0.1", "localhost", "::1", ""):
                return None
            pid = next(
                (
                    c.pid
                    for c in psutil.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == int(port)
                ),
                None,
            )
        return None if pid is None else psutil.Process(pid)
    except (psutil.Error, ValueError, OSError):
        return None


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far: the broker's (None when unknown) and the machine's, busy and in all
    (summed over its logical cores)."""

    at: float
    broker_s: float | None
    machine_busy_s: float
    machine_all_s: float

    @staticmethod
    def take(broker: Any) -> CpuSnapshot | None:
        if psutil is None:
            return None
        b = None
        if broker is not None:
            try:
                t = broker.cpu_times()
                b = float(t.user + t.system)
            except psutil.Error:
                b = None
        m = psutil.cpu_times()
        idle = m.idle + getattr(m, "iowait", 0.0)
        total = sum(m)
        return CpuSnapshot(time.time(), b, total - idle, total)

    @staticmethod
    def interpolated(snaps: list[CpuSnapshot], when: float) -> CpuSnapshot | None:
        """The snapshot a sampler would have taken at wall time ``when`` (interpolated)."""
        if not snaps:
            return None
        busy = _interpolate([(s.at, s.machine_busy_s) for s in snaps], when)
        total = _interpolate([(s.at, s.machine_all_s) for s in snaps], when)
        known = [(s.at, s.broker_s) for s in snaps if s.broker_s is not None]
        broker = _interpolate(known, when) if len(known) == len(snaps) else None
        if busy is None or total is None:
            return None
        return CpuSnapshot(when, broker, busy, total)

    def broker_since(self, earlier: CpuSnapshot) -> float | None:
        if self.broker_s is None or earlier.broker_s is None:
            return None
        return self.broker_s - earlier.broker_s

    def machine_busy_pct_since(self, earlier: CpuSnapshot) -> float:
        """Share of all the machine's cores busy in between, in percent."""
        spent = self.machine_all_s - earlier.machine_all_s
        return (
            round(100.0 * (self.machine_busy_s - earlier.machine_busy_s) / spent, 1)
            if spent > 0
            else 0.0
        )


def python() -> str:
    return sys.executable
