"""`fraudstream demo`: broker, topics, the workers (scoring; the join and the aggregator) and the
simulator, with a live terminal view.

Everything it starts it stops again on Ctrl-C or after ``--duration``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import replace
from pathlib import Path

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from fraudstream.errors import BrokerError
from fraudstream.settings import Settings, companion_roles

HOME = Path(".fraudstream")


class Latencies:
    """What a downstream reader sees, per decision, over the last ``window`` decisions: from the
    transaction's CreateTime to the decision's (appended: the worker's producer stamps it as it
    sends) and to the moment this ``read_committed`` reader was handed it (seen: after the
    worker's transaction committed)."""

    def __init__(self, window: int = 5000, pending: int = 200_000) -> None:
        self.created: dict[str, float] = {}  # transaction_id -> CreateTime (s)
        self.pending = pending
        self.appended: deque[float] = deque(maxlen=window)
        self.seen: deque[float] = deque(maxlen=window)

    def transaction(self, tid: str, created_s: float) -> None:
        if len(self.created) >= self.pending:  # decisions never seen (another reader's, say)
            self.created.pop(next(iter(self.created)))
        self.created[tid] = created_s

    def decision(self, tid: str, appended_s: float, seen_s: float) -> None:
        created = self.created.pop(tid, None)
        if created is not None:
            self.appended.append(max(0.0, appended_s - created))
            self.seen.append(max(0.0, seen_s - created))

    @staticmethod
    def quantiles(values: deque[float], qs: tuple[float, ...]) -> list[float | None]:
        if not values:
            return [None for _ in qs]
        ordered = sorted(values)
        return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]


class LiveView:
    def __init__(self, settings: Settings, web_port: int) -> None:
        self.settings = settings
        self.web_port = web_port
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.scores: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 10)
        self.recent: deque[tuple[float, int]] = deque(maxlen=20)
        self.total = 0
        self.dlq = 0
        self.outcomes: Counter[tuple[str, str, str]] = Counter()
        self.latencies = Latencies()
        self.stop = threading.Event()

    def consume(self) -> None:
        from fraudstream.kafka.clients import make_consumer

        s = self.settings
        c = make_consumer(
            s, group_id=f"fraudstream-demo-view-{os.getpid()}", **{"auto.offset.reset": "latest"}
        )
        c.subscribe(
            [
                s.topic_transactions,
                s.topic_decisions,
                s.topic_scores,
                s.topic_dlq,
                s.topic_outcomes,
            ]
        )
        try:
            while not self.stop.is_set():
                # A short wait: the moment a decision is handed over is what "seen" measures.
                for msg in c.consume(500, 0.01):
                    if msg.error():
                        continue
                    topic = msg.topic()
                    if topic == s.topic_dlq:
                        self.dlq += 1
                        continue
                    v = orjson.loads(msg.value() or b"{}")
                    ts = msg.timestamp()[1] / 1000.0
                    if topic == s.topic_transactions:
                        if isinstance(v, dict) and "transaction_id" in v:
                            self.latencies.transaction(str(v["transaction_id"]), ts)
                    elif topic == s.topic_decisions:
                        self.total += 1
                        self.latencies.decision(v["transaction_id"], ts, time.time())
                        self.decisions[(v["model_version"], v["variant"], v["decision"])] += 1
                    elif topic == s.topic_scores:
                        b = min(9, int(float(v["score"]) * 10))
                        self.scores[(v["model_version"], v["role"])][b] += 1
                    else:
                        self.outcomes[(v["model_version"], v["variant"], v["outcome"])] += 1
        finally:
            c.close()

    def render(self) -> Group:
        now = time.monotonic()
        self.recent.append((now, self.total))
        t0, n0 = self.recent[0]
        rate = (self.total - n0) / (now - t0) if now > t0 else 0.0
        lat = self.latencies
        a50, a99 = lat.quantiles(lat.appended, (0.5, 0.99))
        s50, s99 = lat.quantiles(lat.seen, (0.5, 0.99))

        def ms(x: float | None) -> str:
            return "–" if x is None else f"{x * 1000:.0f} ms"

        head = Table.grid(padding=(0, 3))
        head.add_row(
            f"[b]decisions[/b] {self.total}",
            f"[b]throughput[/b] {rate:,.0f}/s",
            f"[b]latency[/b] appended p50 {ms(a50)} p99 {ms(a99)} · seen (read_committed) "
            f"p50 {ms(s50)} p99 {ms(s99)}",
            f"[b]dead letters[/b] {self.dlq}",
        )
        mix = Table(title="decision mix per model version")
        for col in ("version", "variant", "approve", "review", "decline", "flagged %"):
            mix.add_column(col, justify="right" if col not in ("version", "variant") else "left")
        keys = sorted({(v, var) for v, var, _ in self.decisions})
        for v, var in keys:
            a, rv, d = (self.decisions[(v, var, k)] for k in ("approve", "review", "decline"))
            tot = a + rv + d
            mix.add_row(
                v, var, str(a), str(rv), str(d), f"{100 * (rv + d) / tot:.2f}" if tot else "–"
            )
        dist = Table(title="score distribution (deciles) per version and role")
        dist.add_column("version / role")
        dist.add_column("0.0 ─────────────── 1.0")
        bars = " ▁▂▃▄▅▆▇█"
        for (v, role), hist in sorted(self.scores.items()):
            top = max(hist) or 1
            dist.add_row(
                f"{v} / {role}", "".join(bars[min(8, round(8 * h / top))] * 2 for h in hist)
            )
        out = Table(title="labelled outcomes (feedback joined)")
        for col in ("version", "variant", "TP", "FP", "TN", "FN"):
            out.add_column(col)
        for v, var in sorted({(v, var) for v, var, _ in self.outcomes}):
            out.add_row(
                v, var, *(str(self.outcomes[(v, var, k)]) for k in ("TP", "FP", "TN", "FN"))
            )
        return Group(head, mix, dist, out)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)


def run_demo(base: Settings, duration: float | None, rate: float, partitions: int) -> None:
    from fraudstream.kafka.admin import create_topics
    from fraudstream.kafka.broker import LocalBroker
    from fraudstream.kafka.control import publish_routing, startup_routing
    from fraudstream.kafka.jvm import free_port, port_in_use
    from fraudstream.sim.generator import SimConfig
    from fraudstream.sim.publisher import publish

    console = Console()
    # The demo's own broker, apart from `fraudstream broker start`'s (whose data is kept): a demo
    # starts from an empty cluster every run and stops what it started. Its worker's local tables
    # then belong to the previous run's cluster and are rebuilt (fraudstream.app.localstate).
    broker = LocalBroker(HOME / "demo-broker")
    started_broker = False
    _, _, port = base.kafka_bootstrap.partition(":")
    if os.environ.get("FRAUD_KAFKA_BOOTSTRAP") and port_in_use(int(port or 9092), "127.0.0.1"):
        bootstrap = base.kafka_bootstrap
    else:
        (HOME / "demo-broker").mkdir(parents=True, exist_ok=True)
        with console.status("starting a local Kafka broker (first run downloads it with Maven)…"):
            info = broker.start(fresh=True)
        started_broker = True
        bootstrap = info.bootstrap
    web_port = free_port()
    settings = base.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "partitions": partitions,
            "data_dir": HOME / "demo-worker",
            "web_port": web_port,
        }
    )
    env = {
        **os.environ,
        "FRAUD_KAFKA_BOOTSTRAP": bootstrap,
        "FRAUD_WEB_PORT": str(web_port),
        "FRAUD_DATA_DIR": str(settings.data_dir),
        "FRAUD_PARTITIONS": str(partitions),
        # The simulator publishes a day of event time per second: a replay, which would wait for
        # the entity watermark at every event-time hour. The demo shows live scoring instead,
        # with merchant state as fresh as the watermark's round trip (docs/entity-state.md).
        "FRAUD_ENTITY_MAX_WAIT_S": os.environ.get("FRAUD_ENTITY_MAX_WAIT_S", "0"),
    }
    # Scoring in one process, the feedback join and the entity aggregator in another (unless
    # FRAUD_ROLES says otherwise): in the scoring process they cost it a third of its event
    # loop, and the latency shown would be theirs (docs/benchmark.md).
    roles = os.environ.get("FRAUD_ROLES") or "score"
    companion = companion_roles(roles)
    env["FRAUD_ROLES"] = roles
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    view = LiveView(settings, web_port)
    stop_sim = threading.Event()
    try:
        create_topics(settings)
        routing = replace(
            startup_routing(settings),
            challenger=settings.challenger or "challenger-v2",
            challenger_share=settings.challenger_share or 0.3,
            shadow=True,
        )
        publish_routing(settings, routing)
        envs = [("demo-worker", env)]
        if companion is not None:
            envs.append(
                (
                    "demo-companion",
                    {
                        **env,
                        "FRAUD_ROLES": companion,
                        "FRAUD_WEB_PORT": str(free_port()),
                        "FRAUD_DATA_DIR": str(HOME / "demo-companion"),
                    },
                )
            )
        for name, proc_env in envs:
            log = (HOME / f"{name}.log").open("ab")
            procs.append(
                (
                    name,
                    subprocess.Popen(
                        [sys.executable, "-m", "fraudstream", "worker"],
                        env=proc_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )
        # Traffic starts once the workers are ready, so the latency shown is the worker's own.
        with console.status("starting the workers (loading models, joining the group)…"):
            deadline = time.monotonic() + 120
            for (_, proc), (_, proc_env) in zip(procs, envs, strict=True):
                _wait_ready(proc, int(proc_env["FRAUD_WEB_PORT"]), deadline)
        sim = threading.Thread(
            target=publish,
            kwargs={
                "settings": settings,
                "n": None,
                "rate": rate,
                # On a broker of yours, earlier demos' transaction ids are already decided
                # there: a new seed per run makes new ones.
                "config": SimConfig(seed=7 if started_broker else int(time.time()) % 1_000_000),
                "feedback_delay_s": 15.0,
                "legit_label_share": 0.2,
                "stop": stop_sim,
            },
            daemon=True,
        )
        sim.start()
        consumer = threading.Thread(target=view.consume, daemon=True)
        consumer.start()
        console.print(
            f"broker {bootstrap} · worker metrics http://127.0.0.1:{web_port}/metrics · "
            f"champion {routing.champion} · challenger {routing.challenger} at "
            f"{routing.challenger_share:.0%} · shadow on · Ctrl-C to stop"
        )
        t0 = time.monotonic()
        with Live(view.render(), console=console, refresh_per_second=2) as live:
            while duration is None or time.monotonic() - t0 < duration:
                for name, proc in procs:
                    if proc.poll() is not None:
                        raise BrokerError(
                            f"the worker {name} exited with code {proc.returncode}; see "
                            f"{HOME / f'{name}.log'}"
                        )
                time.sleep(0.5)
                live.update(view.render())
    except KeyboardInterrupt:
        pass
    finally:
        stop_sim.set()
        view.stop.set()
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_broker:
            with contextlib.suppress(Exception):
                broker.stop()
        console.print(f"demo stopped: {view.total} decisions, {view.dlq} dead letters")
