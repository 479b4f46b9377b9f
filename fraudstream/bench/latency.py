"""Latency rows: one fresh process (the worker, or the hand-written ceiling) offered transactions
at fixed rates by a paced producer; decision append time minus transaction create time, and until
a read_committed reader in the bench was handed the decision."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

from fraudstream.bench.common import (
    SeenClock,
    as_live,
    consumer_conf,
    create,
    high_watermarks,
    produce,
    producer_conf,
    read_topic,
)
from fraudstream.bench.config import LABELS
from fraudstream.bench.fleet import Fleet, mb
from fraudstream.bench.procs import CpuSnapshot, Proc, Sampler, python


@dataclass
class Latency:
    offered_rate: float
    achieved_rate: float
    seconds: float
    sent: int
    decided: int
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    # From the transaction's CreateTime to when a read_committed reader (in the bench) was
    # handed the decision: its append time plus, for the worker, the wait for its commit.
    seen_p50_ms: float | None = None
    seen_p99_ms: float | None = None
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_growth_pct: float = 0.0
    # CPU over the run, in percent of one core: the worker (all its threads), its main thread
    # (where the decide loop runs), its companion (the join and the aggregator, which read
    # every decision: about as much CPU as scoring, docs/benchmark.md), the broker; and how
    # busy the machine's cores were.
    worker_cpu_pct: float | None = None
    main_thread_cpu_pct: float | None = None
    companion_cpu_pct: float | None = None
    broker_cpu_pct: float | None = None
    machine_busy_pct: float | None = None
    warmup: bool = False  # the warm-up run: reported, not a measured row
    contender: str = "worker"  # "worker", or "handwritten": the latency ceiling
    note: str = ""


class LatencyRuns(Fleet):
    """The latency rows at fixed offered rates."""

    def latency(
        self, rates: list[float], live: list[Any], sampler: Sampler, key: str = "worker"
    ) -> list[Latency]:
        """Offer ``live`` at each rate in turn to one fresh process of ``key``: the worker, or
        the hand-written ceiling (the latency ceiling: the same work without a framework,
        transactions or changelog). Only the worker's runs start with the warm-up row; the
        ceiling runs after them, on a warmer broker, which can only flatter the ceiling."""
        from fraudstream.core.messages import encode_transaction

        topic = f"bench-{self.uid}.live-{key}.transactions"
        create(self.bootstrap, [topic], self.cfg.partitions)
        companion: Proc | None = None
        if key == "worker":
            env, port = self._worker_env("live", topic, 0)
            companion = self._start_companion("live", topic, sampler)
            decisions, dlq = env["FRAUD_TOPIC_DECISIONS"], env["FRAUD_TOPIC_DLQ"]
            w = Proc(
                "live-worker", [python(), "-m", "fraudstream", "worker"], self.tmp, env=env,
                web_port=port,
            )  # fmt: skip
            warmup_seconds = self.cfg.warmup_seconds
        else:
            pipe = replace(self._pipe(f"live-{key}"), input=topic)
            decisions = dlq = pipe.decisions
            w = Proc(f"live-{key}",
                     [python(), "-m", "fraudstream.bench.ceilings", key, *pipe.argv()],
                     self.tmp)  # fmt: skip
            warmup_seconds = 0.0
        out: list[Latency] = []
        probe = Consumer(consumer_conf(self.bootstrap, f"bench-probe-{self.uid}"))
        p = Producer(producer_conf(self.bootstrap))
        cursor = 0
        total = 0
        try:
            w.start()
            sampler.add(w)
            if self._wait_ready([w], [decisions]) is None:
                return [
                    Latency(r, 0, 0, 0, 0, contender=key, note=f"{w.name} did not become ready")
                    for r in rates
                ]
            plan = [(rate, self.cfg.rate_seconds, False) for rate in rates]
            if warmup_seconds > 0 and rates:
                plan.insert(0, (rates[0], warmup_seconds, True))
            for rate, seconds, warmup in plan:
                k = int(rate * seconds)
                batch = [
                    (t.card_id.encode(), encode_transaction(t))
                    for t in as_live(live[cursor : cursor + k], time.time(), rate)
                ]
                cursor += k
                tx_start = high_watermarks(probe, topic)
                dec_start = high_watermarks(probe, decisions)
                seen = SeenClock(self.bootstrap, decisions, dec_start)
                rss0 = w.sample()
                cpu0, main0 = w.cpu_s, w.main_thread_cpu_s()
                comp0 = _cpu_now(companion)
                snap0 = CpuSnapshot.take(self.broker_ps)
                self.log(
                    f"  offering {rate:,.0f}/s for {seconds:.0f}s to one {LABELS.get(key, key)}"
                    + (" (warm-up) …" if warmup else " …")
                )
                t0 = time.monotonic()
                sent = 0
                while sent < len(batch):
                    due = min(len(batch), int(rate * (time.monotonic() - t0)) + 1)
                    while sent < due:
                        produce(p, topic, *batch[sent])
                        sent += 1
                    p.poll(0)
                    time.sleep(0.001)
                p.flush(30)
                elapsed = time.monotonic() - t0
                total += sent
                self._wait_done([w], sorted({decisions, dlq}), total,
                                time.monotonic() + 60)  # fmt: skip
                seen_at = seen.stop(expect=sent)
                rss1 = w.sample()
                cpu1, main1 = w.cpu_s, w.main_thread_cpu_s()
                comp1 = _cpu_now(companion)
                snap1 = CpuSnapshot.take(self.broker_ps)
                res = Latency(rate, round(sent / elapsed, 1), round(elapsed, 2), sent, 0)
                res.warmup = warmup
                res.contender = key
                if snap0 is not None and snap1 is not None:
                    wall = snap1.at - snap0.at

                    def pct(a: float | None, b: float | None, wall: float = wall) -> float | None:
                        return None if a is None or b is None else round(100 * (b - a) / wall, 1)

                    res.worker_cpu_pct = pct(cpu0, cpu1)
                    res.main_thread_cpu_pct = pct(main0, main1)
                    res.companion_cpu_pct = pct(comp0, comp1)
                    res.broker_cpu_pct = pct(0.0, snap1.broker_since(snap0))
                    res.machine_busy_pct = snap1.machine_busy_pct_since(snap0)
                res.rss_start_mb, res.rss_end_mb = mb(rss0), mb(rss1)
                res.rss_growth_pct = round((rss1 / rss0 - 1) * 100, 1) if rss0 else 0.0
                created = {
                    orjson.loads(v)["transaction_id"]: ts
                    for _, v, ts in read_topic(self.bootstrap, topic, start=tx_start)
                    if v
                }
                lat = [
                    ts - created[tid]
                    for tid, ts in (
                        (orjson.loads(v)["transaction_id"], ts)
                        for _, v, ts in read_topic(self.bootstrap, decisions, start=dec_start)
                        if v
                    )
                    if tid in created
                ]
                res.decided = len(lat)
                if lat:
                    a = np.asarray(lat, dtype=np.float64)
                    res.p50_ms, res.p95_ms, res.p99_ms = (
                        round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)
                    )
                    res.max_ms = round(float(a.max()), 1)
                seen_ms = [
                    at - created[tid]
                    for tid, at in ((orjson.loads(v)["transaction_id"], at) for v, at in seen_at)
                    if tid in created
                ]
                if seen_ms:
                    a = np.asarray(seen_ms, dtype=np.float64)
                    res.seen_p50_ms, res.seen_p99_ms = (
                        round(float(np.percentile(a, q)), 1) for q in (50, 99)
                    )
                if res.decided < sent:
                    res.note = f"{sent - res.decided} not decided within 60 s after the last send"
                if warmup:
                    res.note = f"warm-up, not a measured row. {res.note}".strip()
                self.log(
                    f"    p50 {res.p50_ms} / p95 {res.p95_ms} / p99 {res.p99_ms} / "
                    f"max {res.max_ms} ms over {res.decided} transactions"
                )
                out.append(res)
        finally:
            probe.close()
            w.stop()
            if companion is not None:
                companion.stop()
        return out


def _cpu_now(proc: Proc | None) -> float | None:
    """A process's CPU seconds so far, read now (None: no such process, or no psutil)."""
    if proc is None:
        return None
    proc.sample()
    return proc.cpu_s
