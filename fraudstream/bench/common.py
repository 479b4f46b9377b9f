"""Shared pieces of the benchmark: the run's knobs, Kafka helpers and the models every contender
loads. Nothing here starts processes; see ``fleet``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from fraudstream.kafka.clients import PARTITION_EOF

REPO = Path(__file__).resolve().parents[2]

CHAMPION = "champion-v1"
CHALLENGER = "challenger-v2"
SHARE = 0.5
SHADOW = True
SALT = "bench"


@dataclass(frozen=True)
class Pipe:
    """What a contender process reads and writes (passed on its command line)."""

    bootstrap: str
    input: str
    decisions: str
    scores: str
    group: str
    models_dir: str
    state_dir: str
    partitions: int

    def argv(self) -> list[str]:
        return [
            f"--bootstrap={self.bootstrap}",
            f"--input={self.input}",
            f"--decisions={self.decisions}",
            f"--scores={self.scores}",
            f"--group={self.group}",
            f"--models-dir={self.models_dir}",
            f"--state-dir={self.state_dir}",
            f"--partitions={self.partitions}",
        ]

    @staticmethod
    def parse(argv: list[str] | None = None) -> tuple[Pipe, argparse.Namespace]:
        ap = argparse.ArgumentParser()
        ap.add_argument("mode", nargs="?", default="")
        for name in ("bootstrap", "input", "decisions", "scores", "group", "models-dir"):
            ap.add_argument(f"--{name}", required=True)
        ap.add_argument("--state-dir", required=True)
        ap.add_argument("--partitions", type=int, default=4)
        ns = ap.parse_args(argv)
        return (
            Pipe(
                ns.bootstrap,
                ns.input,
                ns.decisions,
                ns.scores,
                ns.group,
                ns.models_dir,
                ns.state_dir,
                ns.partitions,
            ),
            ns,
        )


#: The worker settings a bench run takes from its own environment (``FRAUD_<NAME>``) and passes
#: to every worker it starts: tuning under test, and the worker's configuration (which roles
#: run in it, how long scoring waits for the entity watermark) for measuring what each costs.
WORKER_KNOBS = (
    "batch_size",
    "table_store",
    "fetch_min_bytes",
    "produce_linger_ms",
    "commit_interval_ms",
    "roles",
    "entity_max_wait_s",
)


def worker_knobs(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``WORKER_KNOBS`` set (non-empty) in ``environ``, by setting name."""
    return {k: v for k in WORKER_KNOBS if (v := environ.get(f"FRAUD_{k.upper()}", ""))}


def run_faust_contender(build: Any, argv: list[str] | None = None) -> None:
    """Parse the pipe arguments, build the contender's Faust app and run it as a worker."""
    import sys

    pipe, _ = Pipe.parse(argv)
    app = build(pipe)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


def say_ready() -> None:
    """Contender processes print this once they own partitions; the harness starts the clock."""
    sys.stdout.write(f"READY {time.time():.6f}\n")
    sys.stdout.flush()


def load_serving(models_dir: str | Path) -> Any:
    """The same models and routing as the worker: champion + challenger, share 0.5, shadow on."""
    from fraudstream.core.engine import ServedModel, Serving
    from fraudstream.core.messages import Routing
    from fraudstream.core.policy import Thresholds
    from fraudstream.core.registry import load

    routing = Routing(
        champion=CHAMPION, challenger=CHALLENGER, challenger_share=SHARE, shadow=SHADOW, salt=SALT
    )
    models = {}
    for v in (CHAMPION, CHALLENGER):
        m = load(Path(models_dir), v)  # one XGBoost thread, like the worker
        models[v] = ServedModel(
            v, m, Thresholds(review=m.meta.review_threshold, decline=m.meta.decline_threshold)
        )
    return Serving(routing, models)


def producer_conf(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    # The worker's own producer settings (fraudstream.kafka.clients.make_producer).
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 500_000,
        **overrides,
    }


def consumer_conf(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        **overrides,
    }


def produce(p: Producer, topic: str, key: bytes | None, value: bytes) -> None:
    while True:
        try:
            p.produce(topic, value=value, key=key)
            return
        except BufferError:
            p.poll(0.01)


def create(
    bootstrap: str, names: Iterable[str], partitions: int, *, log_append_time: bool = False
) -> None:
    """Create topics (LogAppendTime: their timestamps are the broker's append time)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
    futures = admin.create_topics(
        [NewTopic(n, partitions, 1, config=dict(config)) for n in names], operation_timeout=30
    )
    for fut in futures.values():
        fut.result()


def record_count(c: Consumer, topics: Iterable[str]) -> int:
    """Offsets used in ``topics`` (sum of high watermarks): cheap, but a transactional writer's
    commit markers take offsets too, so it can overcount; ``CommittedCounter`` is exact."""
    total = 0
    md = c.list_topics(timeout=10)
    for t in topics:
        meta = md.topics.get(t)
        if meta is None or meta.error is not None:
            continue
        for p in meta.partitions:
            try:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)
            except KafkaException:
                continue  # a fresh topic's leader is not known yet: counts as empty this time
            total += hi - lo
    return total


class CommittedCounter:
    """Counts what a read_committed reader sees in ``topics``, incrementally from the start."""

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        self.c = Consumer(
            consumer_conf(bootstrap, f"bench-count-{os.getpid()}-{time.monotonic_ns()}")
        )
        md = self.c.list_topics(timeout=10)
        tps = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics
            if t in md.topics and md.topics[t].error is None
            for p in md.topics[t].partitions
        ]
        self.c.assign(tps)
        self.n = 0

    def poll(self, seconds: float) -> int:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            batch = self.c.consume(10_000, 0.2)
            self.n += sum(1 for m in batch if m.error() is None)
            if not batch:
                break
        return self.n

    def close(self) -> None:
        self.c.close()


def high_watermarks(c: Consumer, topic: str, attempts: int = 20) -> dict[int, int]:
    for attempt in range(attempts):
        try:
            md = c.list_topics(topic, timeout=10)
            return {
                p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in md.topics[topic].partitions
            }
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)
    return {}


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    start: dict[int, int] | None = None,
    timeout: float = 120.0,
) -> list[tuple[bytes | None, bytes | None, int]]:
    """(key, value, timestamp ms) of every committed record of ``topic`` from ``start`` (default:
    the beginning) up to its current end, read with a read_committed confluent consumer."""
    c = Consumer(
        consumer_conf(
            bootstrap,
            f"bench-reader-{os.getpid()}-{time.monotonic_ns()}",
            **{"enable.partition.eof": True},
        )
    )
    try:
        ends = high_watermarks(c, topic)
        tps = []
        for p, hi in ends.items():
            lo = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
            first = max(lo, (start or {}).get(p, lo))
            if hi > first:
                tps.append(TopicPartition(topic, p, first))
        todo = {tp.partition for tp in tps}
        if not todo:
            return []
        c.assign(tps)
        out: list[tuple[bytes | None, bytes | None, int]] = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(5000, 0.5):
                err = m.error()
                if err is not None:
                    # The end (a transactional topic ends in a commit marker, not a record).
                    if err.code() == PARTITION_EOF:
                        todo.discard(int(m.partition() or 0))
                    continue
                out.append((m.key(), m.value(), m.timestamp()[1]))
                p = int(m.partition() or 0)
                if int(m.offset() or 0) >= ends[p] - 1:
                    todo.discard(p)
        return out
    finally:
        c.close()


def take_ready(c: Consumer, most: int, wait_s: float = 0.05) -> list[Any]:
    """Wait up to ``wait_s`` for the first record, then take what else is already fetched, up
    to ``most``: ``consume(n, t)`` alone waits until it has ``n`` records or ``t`` has passed,
    which at a modest rate adds up to ``t`` to every record's latency."""
    first = c.poll(wait_s)
    if first is None:
        return []
    return [first, *c.consume(most - 1, 0)]


class SeenClock:
    """When a downstream ``read_committed`` reader first sees each record of ``topic`` from
    ``start``: a reader thread that notes the wall time each fetch hands over. A decision
    written in a Kafka transaction is appended at once but becomes visible only when its
    transaction commits, so this is the latency a consumer of decisions really gets."""

    def __init__(self, bootstrap: str, topic: str, start: dict[int, int]) -> None:
        self.c = Consumer(
            consumer_conf(bootstrap, f"bench-seen-{os.getpid()}-{time.monotonic_ns()}")
        )
        self.c.assign([TopicPartition(topic, p, off) for p, off in start.items()])
        self.seen: list[tuple[bytes, float]] = []  # (value, wall time ms when handed over)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-seen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = take_ready(self.c, 10_000)
            now_ms = time.time() * 1000.0
            for m in batch:
                value = m.value()
                if m.error() is None and value:
                    self.seen.append((value, now_ms))

    def stop(self, expect: int, timeout_s: float = 10.0) -> list[tuple[bytes, float]]:
        """Stop once ``expect`` records were seen (or after ``timeout_s``); what was seen."""
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < expect and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(10)
        self.c.close()
        return self.seen


def as_live(txs: list[Any], start: float, rate: float) -> list[Any]:
    """The transactions as live traffic: the i-th one dated ``start + i / rate`` (its planned
    send time), in its own UTC offset. Entity features see events up to an hour and five
    minutes back (docs/entity-state.md): a worker waits for the entity watermark to reach a
    transaction's cutoff, so the simulator's own clock (a day of traffic in seconds) would
    bench a replay, not live traffic."""
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    out = []
    for i, tx in enumerate(txs):
        ts = start + i / rate
        when = datetime.fromtimestamp(ts, timezone(timedelta(seconds=tx.utc_offset_s)))
        out.append(replace(tx, ts=ts, event_time=when.isoformat(timespec="milliseconds")))
    return out
