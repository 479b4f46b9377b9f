"""`/metrics` on a running worker after a simulated run shows every metric the operators need,
with sensible values, and no per-card or per-transaction labels."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraudstream.core.messages import Feedback, encode_feedback, encode_transaction
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import Worker, wait_for

pytestmark = pytest.mark.integration

ALLOWED_LABELS = {
    "decision",
    "model_version",
    "variant",
    "role",
    "reason",
    "source",
    "outcome",
    "cell",
    "version",
    "loaded_at",
    "sha256",
    "topic",
    "partition",
    "generation",
    "le",
}


def test_every_listed_metric_is_served_with_sensible_values(
    broker_settings: Settings, tmp_path: Path
) -> None:
    s = broker_settings.model_copy(
        update={
            "challenger": "challenger-v2",
            "challenger_share": 0.5,
            "shadow": True,
            "metrics_publish_seconds": 1.0,
        }
    )
    create_topics(s)
    w = Worker(s, "worker-metrics", tmp_path).start()
    try:
        w.wait_ready()
        events = list(generate(SimConfig(seed=3, n_cards=200, fraud_rate=0.05), n=1500))
        p = make_producer(s)
        for e in events:
            p.produce(s.topic_transactions, key=e.tx.card_id, value=encode_transaction(e.tx))
        p.produce(s.topic_transactions, key=b"card-x", value=b"not json")
        assert p.flush(30) == 0
        wait_for(s, [s.topic_decisions], len(events))
        for e in events[:300]:
            fb = Feedback(e.tx.transaction_id, e.is_fraud, "analyst", "2026-11-25T10:00:00+00:00")
            p.produce(s.topic_feedback, key=e.tx.transaction_id, value=encode_feedback(fb))
        assert p.flush(30) == 0
        # Labels are joined asynchronously and the confusion gauges refresh every second: wait
        # until both account for every label (or time runs out and the asserts below say so).
        deadline = time.monotonic() + 120
        while True:
            _, text = w.get("/metrics")
            families = {f.name: f for f in text_string_to_metric_families(text)}
            joined = sum(
                x.value
                for name in ("fraudstream_confusion",)
                if name in families
                for x in families[name].samples
            )
            lag_family = families.get("fraudstream_consumer_lag")
            if (joined == 2 * 300 and lag_family is not None and lag_family.samples) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(1)
    finally:
        w.stop()

    def samples(name: str) -> list:  # type: ignore[type-arg]
        assert name in families, f"{name} missing from /metrics"
        return families[name].samples

    decided = {
        (x.labels["decision"], x.labels["model_version"], x.labels["variant"]): x.value
        for x in samples("fraudstream_decisions")
        if x.name.endswith("_total")
    }
    assert sum(decided.values()) == len(events)
    assert {v for _, v, _ in decided} == {"champion-v1", "challenger-v2"}
    latency = {x.name: x.value for x in samples("fraudstream_decision_latency_seconds")}
    assert latency["fraudstream_decision_latency_seconds_count"] == len(events)
    assert 0 < latency["fraudstream_decision_latency_seconds_sum"] / len(events) < 30
    score_counts = {
        (x.labels["model_version"], x.labels["role"]): x.value
        for x in samples("fraudstream_score")
        if x.name.endswith("_count")
    }
    assert sum(score_counts.values()) == 2 * len(events)  # deciding + shadow
    dead = {
        (x.labels["reason"], x.labels["source"]): x.value
        for x in samples("fraudstream_dead_letters")
        if x.name.endswith("_total")
    }
    assert dead.pop(("not_json", "transactions")) == 1
    assert dead  # every other known reason is there, at 0
    assert set(dead.values()) == {0.0}
    outcomes = [x for x in samples("fraudstream_feedback_outcomes") if x.name.endswith("_total")]
    assert sum(x.value for x in outcomes) == 2 * 300  # deciding + shadow record per label
    cells = {
        (x.labels["model_version"], x.labels["variant"], x.labels["cell"]): x.value
        for x in samples("fraudstream_confusion")
    }
    assert sum(cells.values()) == 2 * 300
    info = samples("fraudstream_model_info")
    assert {x.labels["version"] for x in info} == {"champion-v1", "challenger-v2"}
    assert all(len(x.labels["sha256"]) == 12 and x.value == 1 for x in info)
    failures = samples("fraudstream_model_load_failures")
    assert {x.labels["version"] for x in failures if x.name.endswith("_total")} >= {"champion-v1"}
    assert all(x.value == 0 for x in failures if x.name.endswith("_total"))
    # The collector: at least the full pass that settled the heap once the worker was ready.
    gc_counts = {
        x.labels["generation"]: x.value
        for x in samples("fraudstream_gc_pause_seconds")
        if x.name.endswith("_count")
    }
    assert gc_counts.get("2", 0) >= 1, gc_counts
    lag = samples("fraudstream_consumer_lag")
    assert lag
    assert all(x.value >= 0 for x in lag)
    for fam in families.values():
        if fam.name.startswith("fraudstream_"):
            for x in fam.samples:
                assert set(x.labels) <= ALLOWED_LABELS, (fam.name, x.labels)
