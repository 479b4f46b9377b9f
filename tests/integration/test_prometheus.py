"""The alert rules in a real Prometheus (Debian's package) scraping a real worker: every rule
loads and evaluates without error against the worker's real series; labelled counters are
there at 0 before their first event; the challenger-share gauge is the routing in force; a
refused model version fires its alert; dead letters and a stopped worker make their alerts
pending (their `for:` durations are minutes, longer than a test should wait)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fraudstream.core.messages import encode_transaction
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.kafka.control import publish_routing, startup_routing
from fraudstream.kafka.jvm import free_port
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.deploy.tools import tool
from tests.integration.procs import REPO, Worker, wait_for

pytestmark = pytest.mark.integration

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"


class Prometheus:
    def __init__(self, home: Path, target: str) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "fraudstream", "static_configs": [{"targets": [target]}]}
            ],
        }
        (home / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = (home / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                str(tool("prometheus")),
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant query: {label set as text: value}."""
        out = {}
        for row in self.api("query", query=expr)["result"]:
            labels = ",".join(f"{k}={v}" for k, v in sorted(row["metric"].items()))
            out[labels] = float(row["value"][1])
        return out

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def until(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = check()
            except OSError:
                got = None
            if got:
                return got
            assert time.monotonic() < deadline, f"Prometheus: {what} within {timeout:.0f}s"
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def settings(broker_settings: Settings) -> Settings:
    s = broker_settings.model_copy(
        update={"challenger": "challenger-v2", "challenger_share": 0.3, "shadow": True}
    )
    create_topics(s)
    return s


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(settings, "scraped", tmp_path).start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


def test_prometheus_scrapes_a_worker_and_evaluates_the_rules(
    settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    prom = Prometheus(tmp_path, f"127.0.0.1:{worker.port}")
    try:
        prom.until("ready", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{prom.port}/-/ready", timeout=2).status == 200)  # fmt: skip
        prom.until("the worker scraped", lambda: prom.query('up{job="fraudstream"} == 1'))

        # Every rule loaded, and evaluated against the real series without error.
        def evaluated() -> list[dict[str, Any]]:
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

        rules = prom.until("every rule evaluated", evaluated)
        assert len(rules) == 8
        assert all(r["health"] == "ok" for r in rules), [
            (r["name"], r.get("lastError")) for r in rules
        ]

        # Series at 0 before their first event; the routing in force; readiness.
        zero = prom.query('fraudstream_dead_letters_total{source="transactions"} == 0')
        assert len(zero) >= 12, zero
        assert prom.query('fraudstream_decisions_total{model_version="challenger-v2"} == 0')
        assert list(prom.query("fraudstream_challenger_share").values()) == [0.3]
        assert list(prom.query("fraudstream_ready").values()) == [1.0]
        assert not prom.alerts("FraudstreamNoDecisions")  # idle: nothing arrives

        # Traffic with 20 % bad records: decided, and the dead-letter alert becomes pending.
        txs = [ev.tx for ev in generate(SimConfig(seed=5), n=100)]
        p = make_producer(settings)
        for tx in txs:
            p.produce(settings.topic_transactions, key=tx.card_id, value=encode_transaction(tx))
        for i in range(20):
            p.produce(settings.topic_transactions, key=f"card-bad-{i}", value=b"{not json")
        assert p.flush(30) == 0
        wait_for(settings, [settings.topic_decisions], len(txs))
        prom.until(
            "decisions counted", lambda: prom.query("sum(fraudstream_decisions_total) >= 100")
        )
        pending = prom.until(
            "FraudstreamDeadLetterRateHigh pending",
            lambda: prom.alerts("FraudstreamDeadLetterRateHigh"),
        )
        assert pending[0]["state"] == "pending"  # `for: 10m`
        assert not prom.alerts("FraudstreamNoDecisions")

        # A routing change to a version the worker refuses: the alert fires (no `for:`).
        routing = replace(startup_routing(settings), challenger="ghost-v9", challenger_share=0.3)
        publish_routing(settings, routing)
        fired = prom.until(
            "FraudstreamModelLoadFailed firing",
            lambda: [
                a for a in prom.alerts("FraudstreamModelLoadFailed") if a["state"] == "firing"
            ],
        )
        assert fired[0]["labels"]["version"] == "ghost-v9"
        # The refused challenger's predecessor keeps deciding at the share in force.
        assert list(prom.query("fraudstream_challenger_share").values()) == [0.3]

        # The worker stops: its scrapes fail and the down alert becomes pending (`for: 2m`).
        worker.stop()
        down = prom.until(
            "FraudstreamWorkerDown pending", lambda: prom.alerts("FraudstreamWorkerDown")
        )
        assert down[0]["state"] == "pending"
    finally:
        prom.stop()
