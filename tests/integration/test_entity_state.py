"""Live entity state on a real broker (issue 17 items 1-2, docs/entity-state.md): the same
history and labels published to Kafka for live workers and replayed offline give the same
feature vectors (so the same scores); a worker killed mid-stream restores entity state from
Kafka and scores exactly as the uninterrupted replay; the gate waits in a replay and never in
live traffic."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from fraudstream.backtest.stream import iso, publish_timeline
from fraudstream.core import features
from fraudstream.core.messages import Transaction, decode_transaction, encode_transaction
from fraudstream.core.registry import load
from fraudstream.core.replay import LabelEvent, replay
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import Worker, fresh_settings, wait_for

pytestmark = pytest.mark.integration

CHAMPION = "champion-v1"
DAY = 86400.0


def _history(seed: int, n: int) -> tuple[list[Transaction], list[LabelEvent]]:
    """A few days of simulated traffic over few merchants (entity state matters), with labels
    a day after each fraud, some genuine ones, reversals and labels that never come."""
    events = list(
        generate(
            SimConfig(
                seed=seed,
                n_cards=300,
                n_merchants=25,
                fraud_rate=0.04,
                start="2026-03-02T00:00:00Z",
            ),
            n=n,
        )
    )
    rng = random.Random(seed)
    labels: list[LabelEvent] = []
    for e in events:
        tx = e.tx
        r = rng.random()
        if e.is_fraud:
            if r < 0.1:
                continue  # never reported
            if r < 0.25:  # first called genuine, then reversed to fraud
                labels.append(LabelEvent(tx.transaction_id, tx.ts + 0.25 * DAY, False))
            labels.append(LabelEvent(tx.transaction_id, tx.ts + 1.0 * DAY + 37.0, True))
        elif r < 0.05:
            labels.append(LabelEvent(tx.transaction_id, tx.ts + 0.5 * DAY, False))
        elif r < 0.06:  # a false alarm, reversed a day later
            labels.append(LabelEvent(tx.transaction_id, tx.ts + 0.3 * DAY, True))
            labels.append(LabelEvent(tx.transaction_id, tx.ts + 1.3 * DAY, False))
    # Kafka carries reported_at with microseconds: the offline replay reads the same instants.
    labels = [
        LabelEvent(lab.transaction_id, _posix(iso(lab.reported_at)), lab.is_fraud) for lab in labels
    ]
    # Offline reads what the worker reads: the transactions as decoded from Kafka.
    return [decode_transaction(encode_transaction(e.tx)) for e in events], labels


def _posix(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def _offline(s: Settings, txs: list[Transaction], labels: list[LabelEvent]) -> dict[str, float]:
    x, ids = replay(txs, labels, dtype=np.float32)
    p = load(s.models_dir, CHAMPION).predict(x)
    return dict(zip(ids, (float(v) for v in p), strict=True))


def _decisions(s: Settings, want: int, timeout: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in wait_for(s, [s.topic_decisions], want, timeout):
        d = orjson.loads(m.value())
        assert d["transaction_id"] not in out, "two decisions for one transaction"
        out[d["transaction_id"]] = d["score"]
    return out


def _metric(w: Worker, name: str) -> float:
    status, body = w.get("/metrics")
    assert status == 200
    text = body if isinstance(body, str) else orjson.dumps(body).decode()
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def replay_settings(kafka_bootstrap: str) -> Settings:
    s = fresh_settings(
        kafka_bootstrap,
        partitions=2,
        champion=CHAMPION,
        feedback_grace_seconds=3600.0,
        entity_max_wait_s=300.0,
    )
    create_topics(s)
    return s


def _check_parity(s: Settings, live: dict[str, float], offline: dict[str, float]) -> None:
    assert set(live) == set(offline)
    off = [tid for tid in offline if abs(live[tid] - offline[tid]) > 1e-6]
    assert not off, f"{len(off)} of {len(offline)} scores differ from the offline replay: {off[:5]}"


def test_live_features_equal_the_offline_replay(replay_settings: Settings, tmp_path: Path) -> None:
    s = replay_settings
    txs, labels = _history(seed=5, n=2500)
    offline = _offline(s, txs, labels)
    # Entity state changes scores: without it, many would differ.
    x0, ids0 = replay(txs, labels, with_entities=False, dtype=np.float32)
    blind = dict(zip(ids0, load(s.models_dir, CHAMPION).predict(x0), strict=True))
    assert sum(abs(blind[t] - offline[t]) > 1e-6 for t in offline) > len(offline) // 2
    x, _ = replay(txs, labels)
    rows = [features.row_as_dict(r) for r in x]
    assert sum(r["m_frauds_7d"] > 0 for r in rows) > 100, "labels must reach merchant features"

    publish_timeline(s, txs, labels)
    w = Worker(s, "worker-1", tmp_path).start()
    try:
        w.wait_ready(120)
        live = _decisions(s, len(txs), timeout=300)
        _check_parity(s, live, offline)
        assert _metric(w, "fraudstream_entity_gate_waits_total") > 0, "a replay must wait"
        assert _metric(w, "fraudstream_entity_gate_timeouts_total") == 0
    finally:
        w.stop()


def test_a_worker_killed_mid_stream_restores_entity_state_and_scores_the_same(
    replay_settings: Settings, tmp_path: Path
) -> None:
    s = replay_settings
    txs, labels = _history(seed=8, n=2500)
    offline = _offline(s, txs, labels)
    publish_timeline(s, txs, labels)
    w = Worker(s, "worker-1", tmp_path).start()
    w.wait_ready(120)
    deadline = time.monotonic() + 180
    while len(read_all(s, [s.topic_decisions], timeout=10, idle=0.5)) < len(txs) // 3:
        assert time.monotonic() < deadline, w.log_tail()
        time.sleep(0.5)
    w.kill()  # SIGKILL: open transactions (scoring and aggregation) are left to the next owner
    w2 = Worker(s, "worker-2", tmp_path).start()
    try:
        w2.wait_ready(120)
        live = _decisions(s, len(txs), timeout=300)
        _check_parity(s, live, offline)
        assert _metric(w2, "fraudstream_entity_gate_timeouts_total") == 0
    finally:
        w2.stop()


def test_live_traffic_never_waits_for_the_gate(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = fresh_settings(kafka_bootstrap, partitions=2, champion=CHAMPION)
    create_topics(s)
    w = Worker(s, "worker-1", tmp_path).start()
    try:
        w.wait_ready(120)
        time.sleep(4)  # idle sources report the clock
        now = time.time()
        txs = [
            Transaction(
                f"live-{i}",
                f"card-{i % 50}",
                f"m-{i % 7}",
                12.5 + i,
                "EUR",
                iso(now - 1.0 + i * 0.001),
                now - 1.0 + i * 0.001,
                0,
            )
            for i in range(300)
        ]
        p = make_producer(s)
        for tx in txs:
            p.produce(s.topic_transactions, key=tx.card_id.encode(), value=encode_transaction(tx))
        assert p.flush(30) == 0
        assert len(_decisions(s, len(txs), timeout=60)) == len(txs)
        assert _metric(w, "fraudstream_entity_gate_waits_total") == 0
    finally:
        w.stop()
