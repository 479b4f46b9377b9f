"""Real worker processes for integration tests: started as `python -m stream worker`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from fraudstream.kafka.clients import read_all
from fraudstream.kafka.jvm import free_port
from fraudstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def fresh_settings(kafka_bootstrap: str, **overrides: Any) -> Settings:
    """Settings for one test module: the session broker, topic names and an app id of its own,
    the repository's models, two partitions; ``overrides`` on top."""
    uid = uuid.uuid4().hex[:8]
    topics = {
        f"topic_{k}": f"{v}.{uid}"
        for k, v in Settings(_env_file=None).topic_names().items()  # type: ignore[call-arg]
    }
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "app_id": f"fs-{uid}",
        "models_dir": REPO / "models",
        "partitions": 2,
        **topics,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    for name, raw in settings.model_dump().items():
        if raw is None:
            continue
        value = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
        env[f"FRAUD_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    for name, value in extra.items():
        env[f"FRAUD_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Worker:
    def __init__(self, settings: Settings, name: str, log_dir: Path, **extra: Any) -> None:
        self.port = free_port()
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.env = settings_env(
            settings, web_port=self.port, data_dir=log_dir / f"{name}-data", **extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "worker"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                body = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = e.read(), e.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@contextmanager
def running_worker(
    settings: Settings, log_dir: Path, name: str = "worker-1", **extra: Any
) -> Iterator[Worker]:
    w = Worker(settings, name, log_dir, **extra).start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


def run_cli(settings: Settings, *args: str, timeout: float = 180) -> str:
    """``fraudstream ARGS`` in a subprocess with ``settings``; its stdout (fails on an error)."""
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"fraudstream {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_for(
    settings: Settings, topics: list[str], count: int, timeout: float = 120.0
) -> list[Message]:
    """Read ``topics`` from the beginning until at least ``count`` records are there."""
    deadline = time.monotonic() + timeout
    msgs: list[Message] = []
    while time.monotonic() < deadline:
        msgs = read_all(settings, topics, timeout=30, idle=1.0)
        if len(msgs) >= count:
            return msgs
        time.sleep(1.0)
    return msgs
