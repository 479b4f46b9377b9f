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
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

from fraudstream.bench.common import (
    CHALLENGER,
    CHAMPION,
    REPO,
    SALT,
    SHARE,
    CommittedCounter,
    Pipe,
    SeenClock,
    as_live,
    consumer_conf,
    create,
    high_watermarks,
    produce,
    producer_conf,
    read_topic,
    record_count,
    worker_knobs,
)
from fraudstream.bench.procs import CpuSnapshot, Proc, Sampler, broker_process, python
from fraudstream.settings import companion_roles

CONTENDERS = ("passthrough", "faust_passthrough", "handwritten", "naive", "peer", "worker")
LABELS = {
    "passthrough": "pass-through ceiling",
    "faust_passthrough": "Faust pass-through ceiling",
    "handwritten": "hand-written ceiling",
    "handwritten-2": "hand-written ceiling ×2",
    "naive": "naive baseline (Faust)",
    "peer": "peer (Quix Streams)",
    "worker-2": "worker ×2",
    "worker-1": "worker ×1",
}
DESCRIPTIONS = {
    "passthrough": "confluent-kafka consume → produce the value untouched; no decoding, no scoring",
    "faust_passthrough": "a bare Faust app (the worker's Faust settings, raw bytes topics, "
    "take_events(512, 0.005)) forwarding each event's value with a confluent-kafka producer; no "
    "decoding, no state, no scoring: the most any Faust-based worker can reach here",
    "handwritten": "confluent-kafka batch consume → decode → engine.process_batch (same features "
    "and models) → produce decisions and scores; per-card records in a dict, no framework",
    "handwritten-2": "2 processes of the hand-written ceiling in one consumer group: what two "
    "processes of the same work reach on these cores, next to the broker",
    "naive": "a Faust agent, one event at a time: Table for card state, "
    "booster.predict(DMatrix(row)) per model, await send() per record",
    "peer": "Quix Streams: app.dataframe(topic).apply(score, stateful=True) per message, card "
    "record in Quix State (RocksDB + changelog), to_topic() for decisions and scores",
    "worker-2": "2 processes of `fraudstream worker` sharing the partitions",
    "worker-1": "1 process of `fraudstream worker`",
}


@dataclass
class BenchConfig:
    n: int = 200_000
    partitions: int = 4
    rates: tuple[float, ...] = (1000.0, 2000.0, 5000.0)
    half_max_rate: bool = True  # also offer half the measured single-worker maximum
    rate_seconds: float = 30.0
    # Offered first at the first rate and reported apart: the bench's broker is a fresh JVM
    # whose JIT takes ~30-60 s of load to settle (1,000/s on a cold broker: p50 154 ms, its
    # CPU 106 % of a core; 30 s later: 28 ms, 83 %).
    warmup_seconds: float = 40.0
    cap_seconds: float = 180.0  # a throughput contender that has not finished by then is stopped
    # The naive baseline never finishes a quick run: its rate over a shorter cap is as telling.
    naive_cap_seconds: float | None = None  # None: cap_seconds
    ready_timeout: float = 120.0
    workers: tuple[int, ...] = (2, 1)
    handwritten_x2: bool = True  # two processes of the hand-written ceiling (with "handwritten")
    only: tuple[str, ...] = CONTENDERS
    models_dir: Path = REPO / "models"
    bootstrap: str | None = None  # None: start a LocalBroker in a temp dir
    seed: int = 0
    quick: bool = False
    profile: bool = False  # run the single worker under cProfile; top functions in the result
    profile_out: Path | None = None  # where to keep the raw cProfile file
    api: bool = True  # the scoring-API section (needs "worker" in ``only``)
    api_concurrency: tuple[int, ...] = (1, 16)
    api_seconds: float = 10.0
    api_warmup_s: float = 2.0  # one discarded run before the first concurrency
    api_tool: str = "auto"  # "auto" (wrk if on PATH, else aiohttp), "wrk" or "aiohttp"
    # The worker's processing guarantee in every worker row (FRAUD_PROCESSING_GUARANTEE).
    guarantee: str = "exactly_once"

    @staticmethod
    def quick_config(**kw: Any) -> BenchConfig:
        base: dict[str, Any] = {
            "n": 20_000,
            "rates": (1000.0, 2000.0),
            "half_max_rate": False,
            "rate_seconds": 10.0,
            "warmup_seconds": 15.0,
            "handwritten_x2": False,
            "cap_seconds": 20.0,
            "naive_cap_seconds": 10.0,
            "api_concurrency": (16,),
            "api_seconds": 5.0,
            "api_warmup_s": 1.0,
            "quick": True,
        }
        base.update(kw)
        return BenchConfig(**base)


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
    # (where the decide loop runs), the broker; and how busy the machine's cores were.
    worker_cpu_pct: float | None = None
    main_thread_cpu_pct: float | None = None
    broker_cpu_pct: float | None = None
    machine_busy_pct: float | None = None
    warmup: bool = False  # the warm-up run: reported, not a measured row
    contender: str = "worker"  # "worker", or "handwritten": the latency ceiling
    note: str = ""


@dataclass
class ApiRow:
    tool: str  # the load tool that ran: "wrk" or "aiohttp"
    concurrency: int
    seconds: float = 0.0
    requests: int = 0
    ok: int = 0  # 200 answers
    non_200: int = 0
    errors: int = 0  # connection errors / timeouts
    rps: float = 0.0  # 200 answers per second
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_request: float = 0.0  # the worker's CPU time over the run / 200 answers
    rss_mb: float = 0.0  # the worker's RSS after the run
    note: str = ""


WRK_HINT = "wrk is not on PATH: using the aiohttp closed loop instead (apt-get install wrk)"

Log = Callable[[str], None]


def _mb(b: float) -> float:
    return round(b / 1e6, 1)


# --------------------------------------------------------------------------------------------
# machine and stage costs


def machine_info() -> dict[str, Any]:
    import confluent_kafka
    import xgboost

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "numpy": np.__version__,
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
        info["psutil"] = psutil.__version__
    except ImportError:
        info["psutil"] = None
    for mod in ("faust", "quixstreams", "orjson"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def warm_state(seed: int, before: float, days: float = 4.0) -> tuple[dict[str, Any], Any]:
    """Card states and entity state after ``days`` of the simulated world (another seed's),
    shifted to end at ``before``, labels arriving by the feedback schedule (one-day delays)."""
    from dataclasses import replace

    from fraudstream.core import features
    from fraudstream.core.replay import Entities, LabelEvent, Timeline
    from fraudstream.sim.generator import SimConfig, feedback_schedule, generate

    events = list(generate(SimConfig(seed=seed + 1), days=days))
    shift = before - 1.0 - events[-1].tx.ts
    txs = [replace(e.tx, ts=e.tx.ts + shift) for e in events]
    labels = [
        LabelEvent(fb.transaction_id, due + shift, fb.is_fraud)
        for due, fb in feedback_schedule(events, delay_s=86400.0, seed=seed)
    ]
    states: dict[str, Any] = {}
    ents = Entities()
    for group in Timeline.build(txs, labels).groups(ents):
        for tx in group:
            states[tx.card_id], _ = features.step(states.get(tx.card_id), tx, ents.get)
    return states, ents


def stage_costs(txs: list[Any], models_dir: Path, seed: int = 0) -> dict[str, float]:
    """Microseconds per transaction of each stage of the worker's core, in this process."""
    from fraudstream.bench.common import load_serving
    from fraudstream.core import engine, features
    from fraudstream.core.entity import nothing_known
    from fraudstream.core.messages import (
        decode_transaction,
        encode_decision,
        encode_score,
        encode_transaction,
        utc_now_iso,
    )

    serving = load_serving(models_dir)
    raws = [encode_transaction(t) for t in txs]
    n = len(raws)
    out: dict[str, float] = {}

    t = time.perf_counter()
    decoded = [decode_transaction(r) for r in raws]
    out["decode_transaction"] = (time.perf_counter() - t) / n * 1e6

    # Card and entity state as a worker that has run a while holds them: four days of the same
    # simulated world replayed first, with labels by the feedback schedule (one-day delays).
    states, ents = warm_state(seed, decoded[0].ts)
    warm_states = {k: v.copy() for k, v in states.items()}
    rows = []
    t = time.perf_counter()
    for tx in decoded:
        states[tx.card_id], row = features.step(states.get(tx.card_id), tx, ents.get)
        rows.append(row)
    out["features.step (card and entity features)"] = (time.perf_counter() - t) / n * 1e6
    states = {k: v.copy() for k, v in warm_states.items()}
    t = time.perf_counter()
    for tx in decoded:
        states[tx.card_id], row = features.step(states.get(tx.card_id), tx, nothing_known)
    out["features.step (card features only, entity lookup empty)"] = (
        (time.perf_counter() - t) / n * 1e6
    )

    x = np.asarray(rows, dtype=np.float32)
    model = serving.models[CHAMPION].model
    t = time.perf_counter()
    for i in range(0, n, 512):
        model.predict(x[i : i + 512])
    out["predict (one model, batches of 512)"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for i in range(min(n, 512)):
        model.predict(x[i : i + 1])
    out["predict (one model, one row)"] = (time.perf_counter() - t) / min(n, 512) * 1e6
    for method in ("path", "shap"):
        t = time.perf_counter()
        model.contributions(x[:512], method)
        out[f"contributions, {method} (per flagged row, batch of 512)"] = (
            (time.perf_counter() - t) / 512 * 1e6
        )

    records = {k: engine.CardRecord(v.copy()) for k, v in warm_states.items()}
    results = []
    t = time.perf_counter()
    for i in range(0, n, 512):
        batch = decoded[i : i + 512]
        recs = {tx.card_id: records.setdefault(tx.card_id, engine.CardRecord()) for tx in batch}
        results += engine.process_batch(
            serving, batch, recs, now_iso=utc_now_iso(), dedup_window_s=86400.0,
            entities=ents.get,
        )  # fmt: skip
    out["engine.process_batch (features, 2 models, reasons), batches of 512"] = (
        (time.perf_counter() - t) / n * 1e6
    )

    t = time.perf_counter()
    for r in results:
        if isinstance(r, engine.Scored):
            encode_decision(r.decision)
            for s in r.scores:
                encode_score(s)
    out["encode decision + 2 scores"] = (time.perf_counter() - t) / n * 1e6

    t = time.perf_counter()
    for rec in records.values():
        engine.record_from_bytes(engine.record_to_bytes(rec))
    out["card record to/from bytes (per card)"] = (
        (time.perf_counter() - t) / max(1, len(records)) * 1e6
    )
    return {k: round(v, 2) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# the run


class Bench:
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

    # --- phases -------------------------------------------------------------------------------

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
        res.peak_rss_mb = [_mb(p.peak_rss) for p in procs]
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
                    res.broker_cpu_pct = pct(0.0, snap1.broker_since(snap0))
                    res.machine_busy_pct = snap1.machine_busy_pct_since(snap0)
                res.rss_start_mb, res.rss_end_mb = _mb(rss0), _mb(rss1)
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

    def api(self, sampler: Sampler) -> list[ApiRow]:
        """One fresh worker (own app id and topics, an empty input topic, so it owns every
        partition and no request is forwarded); ``POST /v1/score`` at each fixed concurrency."""
        from fraudstream.bench.api_load import measure_api

        cfg = self.cfg
        tool = cfg.api_tool
        if tool == "auto":
            tool = "wrk" if shutil.which("wrk") else "aiohttp"
            if tool == "aiohttp":
                self.log(f"  {WRK_HINT}")
                self.notes.append(WRK_HINT + "; the API table names the tool that ran.")
        topic = f"bench-{self.uid}.api.transactions"
        create(self.bootstrap, [topic], self.cfg.partitions)
        env, port = self._worker_env("api", topic, 0)
        companion = self._start_companion("api", topic, sampler)
        w = Proc(
            "api-worker",
            [python(), "-m", "fraudstream", "worker"],
            self.tmp,
            env=env,
            web_port=port,
        )
        base = f"http://127.0.0.1:{port}"
        out: list[ApiRow] = []
        try:
            w.start()
            sampler.add(w)
            if self._wait_ready([w], [env["FRAUD_TOPIC_DECISIONS"]]) is None:
                return [
                    ApiRow(tool, c, note="worker did not become ready") for c in cfg.api_concurrency
                ]
            if cfg.api_warmup_s > 0:
                self.log(f"  API warm-up: {cfg.api_warmup_s:g}s with {tool} …")
                with contextlib.suppress(Exception):
                    measure_api(base, concurrency=max(cfg.api_concurrency),
                                duration_s=cfg.api_warmup_s, warmup_s=0.0, tool=tool)  # fmt: skip
            for c in cfg.api_concurrency:
                self.log(f"  POST /v1/score, concurrency {c}, {cfg.api_seconds:g}s with {tool} …")
                row = ApiRow(tool, c)
                w.sample()
                cpu0 = w.cpu_s or 0.0
                try:
                    r = measure_api(base, concurrency=c, duration_s=cfg.api_seconds,
                                    warmup_s=0.0, tool=tool)  # fmt: skip
                except Exception as exc:  # a failed tool run is a row with a note, not a crash
                    row.note = f"load run failed: {exc!r}"[:300]
                    out.append(row)
                    continue
                w.sample()
                row.tool, row.seconds, row.requests = r.tool, round(r.duration_s, 2), r.requests
                row.ok, row.non_200, row.errors = r.ok, r.non_200, r.errors
                row.rps = round(r.rps, 1)
                row.p50_ms, row.p99_ms = round(r.p50_ms, 2), round(r.p99_ms, 2)
                cpu = (w.cpu_s or 0.0) - cpu0
                row.cpu_us_per_request = round(cpu / r.ok * 1e6, 1) if r.ok and cpu > 0 else 0.0
                row.rss_mb = _mb(w.rss_samples[-1][1]) if w.rss_samples else 0.0
                if r.non_200 or r.errors:
                    row.note = f"{r.non_200} non-200 answers, {r.errors} connection errors"
                if not w.alive():
                    row.note = f"worker exited: {w.log_tail(3)}"[:300]
                self.log(
                    f"    {row.rps:,.0f} req/s, p50 {row.p50_ms} ms, p99 {row.p99_ms} ms "
                    f"({row.ok:,} × 200 in {row.seconds:.1f}s)"
                )
                out.append(row)
                if not w.alive():
                    break
        finally:
            w.stop()
            if companion is not None:
                companion.stop()
        return out

    def cleanup_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        names = [t for t in admin.list_topics(timeout=10).topics if self.uid in t]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result()

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
