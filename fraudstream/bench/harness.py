"""The benchmark run: one broker, one preloaded topic, every contender on the same data and models.

Order of a run (each contender is its own process, started fresh, reading from offset 0 under a
new consumer group / app id, and writing to its own output topics):

1. stage costs of the core, in process (where a transaction's time goes, no Kafka);
2. preload N simulated transactions into ``<run>.transactions`` (P partitions, key = card_id);
3. throughput of: the pass-through ceiling, the Faust pass-through ceiling, the hand-written
   ceiling, the naive Faust baseline, the Quix Streams peer, 2 worker processes, 1 worker process;
4. latency at fixed offered rates: one fresh worker on an empty topic, a paced producer;
5. the scoring API (``--api``, on by default): one fresh worker, ``POST /v1/score`` under a
   closed-loop load at fixed concurrency (``wrk`` when on PATH, else an aiohttp loop), after a
   discarded warm-up; requests per second of 200 answers and p50 / p99 request latency.

Timestamps. Output topics are created with ``message.timestamp.type=LogAppendTime``, so a
decision's timestamp is the broker's append time. Input timestamps are CreateTime, set by the
producer when ``produce()`` is called. Throughput = transactions decided / (last decision's
append time − start), where start = the moment the contender said it was ready (the worker's
/readyz; the bench contenders' partition assignment), or the first output if that came earlier.
Latency = decision append time − transaction create time, joined by ``transaction_id``.

Where each part is: ``config`` (the contenders, BenchConfig), ``stages`` (1), ``throughput`` (2, 3),
``latency`` (4), ``api_rows`` (5), all on ``fleet`` (the broker, the topics, the processes and
their companions); here the run in order, and the result assembled (ratios, notes, profile).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fraudstream.bench.api_rows import ApiRow, ApiRuns
from fraudstream.bench.common import CHALLENGER, CHAMPION, SHARE
from fraudstream.bench.config import DESCRIPTIONS, BenchConfig
from fraudstream.bench.latency import LatencyRuns
from fraudstream.bench.procs import Sampler, broker_process
from fraudstream.bench.stages import machine_info, stage_costs
from fraudstream.bench.throughput import Throughput, ThroughputRuns


class Bench(ThroughputRuns, LatencyRuns, ApiRuns):
    """The whole run: every section in turn, then the result assembled."""

    def run(self) -> dict[str, Any]:
        from fraudstream.sim.generator import SimConfig, generate

        cfg = self.cfg
        t_run = time.monotonic()
        result: dict[str, Any] = {
            "machine": machine_info(),
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(cfg).items()
                if k != "bootstrap"
            }
            | {
                "champion": CHAMPION,
                "challenger": CHALLENGER,
                "challenger_share": SHARE,
                "shadow": True,
            },
        }
        only = set(cfg.only)
        if "peer" in only:
            try:
                import quixstreams  # noqa: F401
            except ImportError:
                only.discard("peer")
                self.skipped["peer"] = (
                    "quixstreams is not installed (pip install 'fraudstream[bench]')"
                )
        live_n = (
            int(sum(cfg.rates) * cfg.rate_seconds + cfg.rates[0] * cfg.warmup_seconds)
            if {"worker", "handwritten"} & only and cfg.rates
            else 0
        )
        self.log(f"generating {cfg.n:,} transactions (+{live_n:,} for the offered-rate runs) …")
        gen = generate(SimConfig(seed=cfg.seed), n=None)
        txs = [next(gen).tx for _ in range(cfg.n)]
        result["stages_us_per_tx"] = stage_costs(txs[:5000], cfg.models_dir, cfg.seed)
        with self.broker() as bootstrap:
            self.bootstrap = bootstrap
            self.broker_ps = broker_process(bootstrap, self.broker_pid)
            try:
                self.log(f"preloading {cfg.n:,} transactions into {cfg.partitions} partitions …")
                result["preload"] = self.preload(txs)
                del txs
                rows: list[Throughput] = []
                with Sampler(broker=self.broker_ps) as sampler:
                    for key in ("passthrough", "faust_passthrough", "handwritten", "naive", "peer"):
                        if key in only:
                            rows.append(self.throughput(key, sampler))
                        if key == "handwritten" and key in only and cfg.handwritten_x2:
                            # What two processes of the same work reach here: the ceiling for
                            # the worker's own two-process figure.
                            rows.append(self.throughput("handwritten-2", sampler))
                    profile: Path | None = None
                    rates = list(cfg.rates)
                    live: list[Any] = []
                    if "worker" in only:
                        for k in cfg.workers:
                            prof = self.tmp / "worker.prof" if cfg.profile and k == 1 else None
                            rows.append(self.throughput(f"worker-{k}", sampler, prof))
                            profile = profile or prof
                        one = next((r for r in rows if r.key == "worker-1"), None)
                        if cfg.half_max_rate and one is not None and one.tx_per_s > 0:
                            rates.append(round(one.tx_per_s / 2, -1))
                        extra = int(
                            (rates[-1] if len(rates) > len(cfg.rates) else 0) * cfg.rate_seconds
                        )
                        live = [next(gen).tx for _ in range(live_n + extra)]
                        result["latency"] = [asdict(x) for x in self.latency(rates, live, sampler)]
                    else:
                        result["latency"] = []
                    if "handwritten" in only and rates:
                        live = live or [next(gen).tx for _ in range(live_n)]
                        result["latency"] += [
                            asdict(x) for x in self.latency(rates, live, sampler, "handwritten")
                        ]
                    api_rows: list[ApiRow] = []
                    if cfg.api and "worker" in only:
                        self.log("scoring API: one worker, POST /v1/score at fixed concurrency …")
                        api_rows = self.api(sampler)
                    result["api"] = [asdict(x) for x in api_rows]
                    if profile is not None and profile.exists():
                        result["profile_top"] = _profile_top(profile)
                        result["profile_fraudstream"] = _profile_top(profile, ours=True)
                        if cfg.profile_out is not None:
                            cfg.profile_out.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy(profile, cfg.profile_out)
                result["throughput"] = [asdict(r) for r in rows]
            finally:
                if cfg.bootstrap:
                    with contextlib.suppress(Exception):
                        self.cleanup_topics()
        result["ratios"] = ratios(
            result["throughput"], os.cpu_count() or 1, result["latency"], result.get("api")
        )
        result["skipped"] = self.skipped
        result["contenders"] = {r["key"]: DESCRIPTIONS[r["key"]] for r in result["throughput"]}
        result["notes"] = self.notes + default_notes(cfg)
        if not result.get("machine", {}).get("psutil"):
            result["notes"].append(
                "Memory and CPU columns: not sampled, psutil is not installed "
                "(pip install 'fraudstream[bench]', which `make bench` does)."
            )
        result["elapsed_s"] = round(time.monotonic() - t_run, 1)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return result


def ratios(
    rows: list[dict[str, Any]],
    cores: int,
    latency: list[dict[str, Any]] | None = None,
    api: list[dict[str, Any]] | None = None,
) -> dict[str, float | None]:
    """The worker against each ceiling and the baseline; two processes against one, for the
    worker and for the hand-written ceiling; the worker's p99 latency, appended and seen by a
    read_committed reader, against the hand-written ceiling's at each offered rate both ran
    (``p99_vs_handwritten@<rate>``, ``seen_p99_vs_handwritten@<rate>``, and the seen p99 over
    issue 19's exactly-once allowance, 100 ms + 2 × the ceiling's); the API's CPU per request
    against the stream's CPU per transaction (``api_cpu_vs_stream_cpu@c<n>``)."""
    by = {r["key"]: r["tx_per_s"] for r in rows if r.get("tx_per_s")}
    w1 = by.get("worker-1")
    # About what the machine allows two workers: all its cores spent on workers and the broker
    # at the CPU per transaction that one worker and the broker took (an estimate: two workers
    # may spend a little more or less per transaction).
    one = next((r for r in rows if r["key"] == "worker-1"), None)
    cpu_bound = None
    if one and w1 and one.get("cpu_us_per_tx") and one.get("broker_cpu_us_per_tx") is not None:
        per_tx_s = (one["cpu_us_per_tx"] + one["broker_cpu_us_per_tx"]) / 1e6
        cpu_bound = round(cores / per_tx_s / w1, 3)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    out = {
        "worker_vs_passthrough": ratio(w1, by.get("passthrough")),
        "worker_vs_faust_passthrough": ratio(w1, by.get("faust_passthrough")),
        "worker_vs_handwritten": ratio(w1, by.get("handwritten")),
        "worker_vs_naive": ratio(w1, by.get("naive")),
        "worker_vs_peer": ratio(w1, by.get("peer")),
        "two_workers_vs_one": ratio(by.get("worker-2"), w1),
        "two_handwritten_vs_one": ratio(by.get("handwritten-2"), by.get("handwritten")),
        "two_workers_cpu_bound": cpu_bound,
    }
    # Measured rows only (not the warm-up); the first row of a rate if it ran twice.
    p99: dict[str, dict[float, float]] = {}
    for r in latency or []:
        if not r.get("warmup") and r.get("decided") and r.get("p99_ms"):
            p99.setdefault(r.get("contender", "worker"), {}).setdefault(
                r["offered_rate"], r["p99_ms"]
            )
    seen: dict[str, dict[float, float]] = {}
    for r in latency or []:
        if not r.get("warmup") and r.get("decided") and r.get("seen_p99_ms"):
            seen.setdefault(r.get("contender", "worker"), {}).setdefault(
                r["offered_rate"], r["seen_p99_ms"]
            )
    for rate, ceiling in p99.get("handwritten", {}).items():
        out[f"p99_vs_handwritten@{rate:g}"] = ratio(p99.get("worker", {}).get(rate), ceiling)
    for rate, ceiling in seen.get("handwritten", {}).items():
        mine = seen.get("worker", {}).get(rate)
        out[f"seen_p99_vs_handwritten@{rate:g}"] = ratio(mine, ceiling)
        out[f"seen_p99_vs_100ms_plus_2x_handwritten@{rate:g}"] = ratio(mine, 100 + 2 * ceiling)
    stream = one.get("cpu_us_per_tx") if one else None
    for a in api or []:
        if a.get("cpu_us_per_request"):
            key = f"api_cpu_vs_stream_cpu@c{a['concurrency']}"
            out[key] = ratio(a["cpu_us_per_request"], stream)
    return out


def default_notes(cfg: BenchConfig) -> list[str]:
    notes = [
        f"Worker rows (throughput, latency, API) run with FRAUD_PROCESSING_GUARANTEE="
        f"{cfg.guarantee} (--guarantee).",
        "Every process shares this machine's cores with the broker and the bench itself.",
        "Throughput clock: from the contender's ready signal (worker: /readyz 200) or its first "
        "output if earlier, to its last decision's broker append time (LogAppendTime).",
        "Latency: decision append time minus the transaction's producer CreateTime (includes the "
        "producer's linger.ms=2), joined by transaction_id; every transaction of a row counts. "
        "'seen': until a read_committed reader in the bench was handed the decision (for the "
        "worker that includes waiting for its transaction's commit: what a consumer of "
        "decisions gets). "
        f"The first row is a warm-up ({cfg.warmup_seconds:g}s at the first rate, reported, not "
        "measured): the bench's broker is a fresh JVM, and its JIT needs that long to settle.",
        "The worker runs with FRAUD_ROLES=score (scoring only, as the ceilings); the join is a"
        " separate role.",
        "Ceilings keep per-card records in a dict (no changelog) and do not flush per batch.",
    ]
    if cfg.api:
        notes.append(
            "API: one fresh worker owning every partition (nothing forwarded), closed-loop "
            "POST /v1/score at fixed concurrency, a new transaction_id per request over 5,000 "
            "cards; req/s counts 200 answers; latency is per request as the load tool sees it, "
            "load tool on the same cores; each 200 also writes its decision and scores to Kafka."
        )
    if cfg.quick:
        notes.append(
            f"--quick: {cfg.n:,} transactions, runs of a few seconds; figures are noisy "
            "(startup and rebalancing weigh more than in the full run)."
        )
    return notes


def _profile_top(path: Path, k: int = 25, *, ours: bool = False) -> list[dict[str, Any]]:
    """Top functions by own time; ``ours``: fraudstream's own functions by cumulative time."""
    import pstats

    st = pstats.Stats(str(path))
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if ours and f"{os.sep}fraudstream{os.sep}" not in file:
            continue
        name = f"{Path(file).parent.name}/{Path(file).name}" if ours else Path(file).name
        rows.append({"function": f"{name}:{line}:{func}", "calls": nc,
                     "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})  # fmt: skip
    rows.sort(key=lambda r: r["cumtime_s" if ours else "tottime_s"], reverse=True)
    return rows[:k]
