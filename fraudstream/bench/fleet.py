"""The run's broker, topics and processes, under every section: a local broker (or the one given),
the contenders' pipes, each worker's settings and its companion (the roles the workers leave
out), and waiting until processes are ready and until their output is complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from fraudstream.bench.common import (
    CHALLENGER,
    CHAMPION,
    SALT,
    SHARE,
    CommittedCounter,
    Pipe,
    consumer_conf,
    create,
    record_count,
    worker_knobs,
)
from fraudstream.bench.config import BenchConfig, Log
from fraudstream.bench.procs import Proc, Sampler, python
from fraudstream.settings import companion_roles


def mb(b: float) -> float:
    return round(b / 1e6, 1)


class Fleet:
    """One run's temporary folder, broker and topic names, and the helpers every section's
    processes are started and waited on with."""

    def __init__(self, cfg: BenchConfig, log: Log = print) -> None:
        self.cfg = cfg
        self.log = log
        self.uid = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"fraudstream-bench-{self.uid}-"))
        self.bootstrap = ""
        self.input = f"bench-{self.uid}.transactions"
        self.notes: list[str] = []
        self.skipped: dict[str, str] = {}
        self.broker_pid: int | None = None
        self.broker_ps: Any = None

    @contextlib.contextmanager
    def broker(self) -> Iterator[str]:
        if self.cfg.bootstrap:
            yield self.cfg.bootstrap
            return
        from fraudstream.kafka.broker import LocalBroker

        b = LocalBroker(self.tmp / "broker")
        self.log("starting a local Kafka broker …")
        info = b.start(port=None)
        self.broker_pid = info.pid
        try:
            yield info.bootstrap
        finally:
            b.stop()

    # --- helpers ------------------------------------------------------------------------------

    def _pipe(self, name: str) -> Pipe:
        pipe = Pipe(
            bootstrap=self.bootstrap,
            input=self.input,
            decisions=f"bench-{self.uid}.{name}.decisions",
            scores=f"bench-{self.uid}.{name}.scores",
            group=f"bench-{self.uid}-{name}",
            models_dir=str(self.cfg.models_dir),
            state_dir=str(self.tmp / "state"),
            partitions=self.cfg.partitions,
        )
        create(self.bootstrap, [pipe.decisions, pipe.scores], self.cfg.partitions,
               log_append_time=True)  # fmt: skip
        (self.tmp / "state").mkdir(parents=True, exist_ok=True)
        return pipe

    def _worker_env(
        self, name: str, topic_in: str, i: int, roles: str | None = None
    ) -> tuple[dict[str, str], int]:
        from fraudstream.kafka.admin import create_topics
        from fraudstream.kafka.jvm import free_port
        from fraudstream.settings import Settings

        base = Settings(_env_file=None)  # type: ignore[call-arg]
        topics = {
            f"topic_{k}": f"bench-{self.uid}.{name}.{v}" for k, v in base.topic_names().items()
        }
        topics["topic_transactions"] = topic_in
        app_id = f"bench-{self.uid}-{name}"
        port = free_port()
        values: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "app_id": app_id,
            "data_dir": str(self.tmp / f"{name}-{i}-data"),
            "web_port": port,
            "models_dir": str(self.cfg.models_dir),
            "champion": CHAMPION,
            "challenger": CHALLENGER,
            "challenger_share": SHARE,
            "shadow": True,
            "routing_salt": SALT,
            "partitions": self.cfg.partitions,
            "log_level": "WARNING",
            # Scoring here; the entity aggregator (whose state the scoring path reads and
            # waits for) and the join (idle here: no labels; it reports the feedback watermark)
            # in a companion process, as `make demo` and the Helm chart run them. The
            # hand-written ceiling reads no entity state: the ratio shows what the topology costs.
            "roles": "score",
            "processing_guarantee": self.cfg.guarantee,
            **topics,
        }
        # Worker tuning and configuration under test, passed through from the bench's own
        # environment.
        values.update(worker_knobs(os.environ))
        if roles is not None:
            values["roles"] = roles
            values["data_dir"] = str(self.tmp / f"{name}-{roles.replace(',', '-')}-data")
        if i == 0:
            # Decisions with the broker's append time; every other topic as `topics create` makes.
            with contextlib.suppress(Exception):
                create(self.bootstrap, [topics["topic_decisions"]], self.cfg.partitions,
                       log_append_time=True)  # fmt: skip
            create_topics(Settings(_env_file=None, **values))  # type: ignore[call-arg]
        env = {
            f"FRAUD_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in values.items()
        }
        return env, port

    def _companion(self, name: str, topic_in: str) -> Proc | None:
        """The process running the roles the workers of ``name`` leave out (the join and the
        aggregator, unless FRAUD_ROLES says otherwise): None when they run every role."""
        rest = companion_roles(worker_knobs(os.environ).get("roles", "score"))
        if rest is None:
            return None
        env, port = self._worker_env(name, topic_in, 1, roles=rest)
        argv = [python(), "-m", "fraudstream", "worker"]
        return Proc(f"{name}-companion", argv, self.tmp, env=env, web_port=port)

    def _start_companion(self, name: str, topic_in: str, sampler: Sampler) -> Proc | None:
        """Start the companion of ``name``'s workers and wait until it is ready, before the
        workers start (their clock is theirs alone). Raises when it does not become ready."""
        c = self._companion(name, topic_in)
        if c is None:
            return None
        c.start()
        sampler.add(c)
        if self._wait_ready([c], []) is None:
            c.stop()
            raise RuntimeError(f"{c.name} did not become ready: {c.log_tail(3)}")
        return c

    def _wait_ready(self, procs: list[Proc], pipe_topics: list[str]) -> float | None:
        """Wait until every process is ready (or produced output). Returns the earliest ready
        time, or None when a process died or the timeout passed."""
        deadline = time.monotonic() + self.cfg.ready_timeout
        probe = Consumer(consumer_conf(self.bootstrap, f"bench-probe-{self.uid}"))
        try:
            while time.monotonic() < deadline:
                for p in procs:
                    if not p.alive():
                        self.log(f"  {p.name} exited early:\n{p.log_tail()}")
                        return None
                    p.poll_ready()
                if all(p.ready_at is not None for p in procs):
                    return min(p.ready_at for p in procs if p.ready_at is not None)
                no_signal = any(p.web_port is None and p.ready_at is None for p in procs)
                if (len(procs) == 1 or no_signal) and record_count(probe, pipe_topics):
                    # Output before the ready signal (a worker decides as soon as its
                    # partitions are open; /readyz can answer a moment later): the first
                    # output's time starts the clock, and the CPU count. (Several workers: the
                    # clock waits for all of them, see ``throughput``.)
                    return time.time()
                time.sleep(0.05)
        finally:
            probe.close()
        return None

    def _wait_done(self, procs: list[Proc], topics: list[str], want: int, until: float) -> int:
        probe = Consumer(consumer_conf(self.bootstrap, f"bench-probe-{self.uid}"))
        try:
            have = 0
            while time.monotonic() < until:
                have = record_count(probe, topics)
                if have >= want or not all(p.alive() for p in procs):
                    break
                time.sleep(0.25)
            if have < want:
                return have
            # Watermarks count commit markers too: confirm with what readers really see.
            counter = CommittedCounter(self.bootstrap, topics)
            try:
                while counter.poll(1.0) < want and time.monotonic() < until:
                    if not all(p.alive() for p in procs):
                        break
                return counter.n
            finally:
                counter.close()
        finally:
            probe.close()

    def cleanup_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        names = [t for t in admin.list_topics(timeout=10).topics if self.uid in t]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result()
