"""Throughput rows: the preloaded topic, and each contender (the ceilings, the naive baseline, the
peer, the worker with 2 and 1 processes) started fresh to decide all of it, timed by its output's
broker append times."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from fraudstream.bench.common import as_live, create, produce, producer_conf, read_topic
from fraudstream.bench.config import LABELS
from fraudstream.bench.fleet import Fleet, mb
from fraudstream.bench.procs import CpuSnapshot, Proc, Sampler, python


@dataclass
class Throughput:
    key: str
    label: str
    processes: int
    transactions: int
    decided: int = 0
    complete: bool = False
    seconds: float = 0.0
    tx_per_s: float = 0.0
    startup_s: float = 0.0  # process start -> ready
    first_output_s: float = 0.0  # ready -> first decision (negative: output before /readyz)
    peak_rss_mb: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    cpu_us_per_tx: float = 0.0
    # Over the clock's window: the broker's CPU per decision, and how busy the machine's cores
    # were (every process on it, the bench's own included).
    broker_cpu_us_per_tx: float | None = None
    machine_busy_pct: float | None = None
    note: str = ""


class ThroughputRuns(Fleet):
    """The preload and the throughput rows."""

    def preload(self, txs: list[Any]) -> dict[str, Any]:
        from fraudstream.core.messages import encode_transaction

        create(self.bootstrap, [self.input], self.cfg.partitions)
        p = Producer(
            producer_conf(self.bootstrap, **{"linger.ms": 20, "batch.num.messages": 10000})
        )
        t = time.perf_counter()
        # A backlog of the last moments (1,000 transactions a second): what a worker catching
        # up after a stop finds, without a replay's waits for the entity watermark.
        for tx in as_live(txs, time.time() - len(txs) / 1000.0, 1000.0):
            produce(p, self.input, tx.card_id.encode(), encode_transaction(tx))
        left = p.flush(60)
        secs = time.perf_counter() - t
        if left:
            raise RuntimeError(f"preload: {left} transactions were not acknowledged")
        return {
            "transactions": len(txs),
            "seconds": round(secs, 2),
            "tx_per_s": round(len(txs) / secs),
        }

    def throughput(self, key: str, sampler: Sampler, profile_to: Path | None = None) -> Throughput:
        cfg = self.cfg
        n = cfg.n
        base, _, count = key.partition("-")
        nproc = int(count) if count else 1
        res = Throughput(key, LABELS[key], nproc, n)
        procs: list[Proc] = []
        companion: Proc | None = None
        if key.startswith("worker-"):
            out_topics = []
            for i in range(nproc):
                env, port = self._worker_env(key, self.input, i)
                out_topics = [env["FRAUD_TOPIC_DECISIONS"], env["FRAUD_TOPIC_DLQ"]]
                argv = [python(), "-m", "fraudstream", "worker"]
                if profile_to is not None:
                    argv = [python(), "-m", "cProfile", "-o", str(profile_to), "-m", "fraudstream",
                            "worker"]  # fmt: skip
                procs.append(Proc(f"{key}.{i}", argv, self.tmp, env=env, web_port=port))
            decisions = out_topics[0]
            # After the first worker's settings made the topics (decisions with append time).
            companion = self._start_companion(key, self.input, sampler)
        else:
            pipe = self._pipe(key)
            module = {
                "passthrough": "fraudstream.bench.ceilings",
                "faust_passthrough": "fraudstream.bench.faust_passthrough",
                "handwritten": "fraudstream.bench.ceilings",
                "naive": "fraudstream.bench.naive",
                "peer": "fraudstream.bench.peer",
            }[base]
            mode = [base] if module == "fraudstream.bench.ceilings" else []
            # Several processes share the pipe, so one consumer group splits the partitions.
            argv = [python(), "-m", module, *mode, *pipe.argv()]
            procs += [
                Proc(f"{key}.{i}" if nproc > 1 else key, argv, self.tmp) for i in range(nproc)
            ]
            out_topics = [pipe.decisions]
            decisions = pipe.decisions
        self.log(f"  {res.label}: starting {nproc} process(es) …")
        try:
            for p in procs:
                p.start()
                sampler.add(p)
            ready = self._wait_ready(procs, out_topics)
            if ready is None:
                res.note = (
                    "did not become ready: "
                    + " | ".join(p.log_tail(3).replace("\n", " ") for p in procs)[:300]
                )
                return res
            res.startup_s = round(ready - min(p.started_at for p in procs), 2)
            for p in procs:
                p.sample()
            cap = cfg.cap_seconds
            if base == "naive" and cfg.naive_cap_seconds is not None:
                cap = min(cap, cfg.naive_cap_seconds)
            have = self._wait_done(procs, out_topics, n, time.monotonic() + cap)
            for p in procs:
                p.sample()
        finally:
            for p in procs:
                p.stop()
            if companion is not None:
                companion.stop()
        if have < n:
            died = [
                p.name
                for p in procs
                if p.proc is not None and p.proc.returncode not in (0, -15, None)
            ]
            res.note = (
                f"partial: stopped after the {cap:.0f}s cap with {have} of {n} done"
                if not died
                else f"process(es) {died} exited: {procs[0].log_tail(3)}"
            )
        recs = read_topic(self.bootstrap, decisions)
        if not recs:
            res.note = res.note or "no output"
            return res
        stamps = np.array([ts for _, _, ts in recs], dtype=np.float64) / 1000.0
        if key == "passthrough":
            res.decided = len(recs)
        else:
            res.decided = len({orjson.loads(v)["transaction_id"] for _, v, _ in recs if v})
        start = min(ready, float(stamps.min()))
        last = float(stamps.max())
        res.first_output_s = round(float(stamps.min()) - ready, 3)
        res.seconds = round(last - start, 3)
        res.tx_per_s = round(res.decided / res.seconds, 1) if res.seconds > 0 else 0.0
        res.complete = res.decided >= n
        clock_start = start
        all_ready = max((p.ready_at or ready) for p in procs)
        steady = int((stamps >= all_ready).sum())
        if nproc > 1 and all_ready > start and steady < max(1, res.decided // 10):
            res.note = (
                f"the last process was ready only {all_ready - start:.1f}s after the first, when "
                f"{res.decided - steady:,} of {res.decided:,} were decided: this is mostly one "
                f"process; use a larger -n. {res.note}"
            ).strip()
        elif nproc > 1 and all_ready > start:
            # Several processes: the clock starts once every one of them owns partitions (the
            # group's join rebalance is startup, not sustained work); the figure with the
            # rebalance is kept in the note.
            with_rebalance = res.tx_per_s
            clock_start = all_ready
            res.seconds = round(last - all_ready, 3)
            res.tx_per_s = round(steady / res.seconds, 1) if res.seconds > 0 else 0.0
            res.note = (
                f"{steady:,} decisions after all {nproc} were ready "
                f"({all_ready - start:.1f}s after the first); {with_rebalance:,.0f} tx/s "
                f"counting from the first ready. {res.note}"
            ).strip()
        res.peak_rss_mb = [mb(p.peak_rss) for p in procs]
        # CPU over the clock's own window, from the sampler's series.
        t0, t1 = clock_start, last
        # The companion's CPU counts: the join and the aggregator are part of the worker.
        cpu = sum(
            (p.cpu_at(t1) or 0.0) - (p.cpu_at(t0) or 0.0)
            for p in (*procs, *([companion] if companion is not None else []))
        )
        counted = res.tx_per_s * res.seconds
        res.cpu_s = round(cpu, 2)
        res.cpu_us_per_tx = round(cpu / max(1.0, counted) * 1e6, 1)
        snap0, snap1 = (
            CpuSnapshot.interpolated(sampler.snapshots, t0),
            CpuSnapshot.interpolated(sampler.snapshots, t1),
        )
        if snap0 is not None and snap1 is not None:
            res.machine_busy_pct = snap1.machine_busy_pct_since(snap0)
            broker = snap1.broker_since(snap0)
            if broker is not None:
                res.broker_cpu_us_per_tx = round(broker / max(1.0, counted) * 1e6, 1)
        self.log(
            f"    {res.decided} in {res.seconds:.2f}s = {res.tx_per_s:,.0f} tx/s "
            f"(ready after {res.startup_s:.1f}s; peak RSS {res.peak_rss_mb} MB)"
        )
        return res
