"""Inputs from any Kafka client: transactions and labels published with confluent-kafka's
default producer (librdkafka's partitioner: CRC32 of the key) are decided and joined as if
published with murmur2 — every transaction once, in its card's partition and with its card's
state (the API's answer uses it), outcomes equal to an independent recomputation (real broker,
real worker)."""

from __future__ import annotations

import http.client
import time
import zlib
from collections import Counter
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from fraudstream.app.partitioning import home
from fraudstream.core.messages import (
    Feedback,
    Transaction,
    decode_transaction,
    encode_feedback,
    encode_transaction,
)
from fraudstream.core.outcomes import classify
from fraudstream.core.registry import load
from fraudstream.core.replay import replay
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import read_all
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import Worker, fresh_settings, wait_for
from tests.integration.test_api import _tx

pytestmark = pytest.mark.integration

PARTITIONS = 2


def crc32_partition(key: bytes) -> int:
    """Where librdkafka's default partitioner (consistent_random) puts a keyed record."""
    return zlib.crc32(key) % PARTITIONS


@pytest.fixture(scope="module")
def env(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Worker]]:
    s = fresh_settings(
        kafka_bootstrap,
        partitions=PARTITIONS,
        champion="champion-v1",
        feedback_grace_seconds=60.0,  # a busy machine can hold the join behind its decisions
    )
    create_topics(s)
    w = Worker(s, "worker-any", tmp_path_factory.mktemp("any")).start()
    try:
        w.wait_ready()
        yield s, w
    finally:
        w.stop()


def _publish(s: Settings, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    p = Producer(s.kafka_client_config())  # confluent-kafka's defaults: CRC32 partitioner
    for key, value in items:
        p.produce(topic, key=key, value=value)
    assert p.flush(30) == 0


def _offline_scores(s: Settings, txs: list[Transaction]) -> dict[str, float]:
    """Each transaction's champion score from the training path: card histories and, point in
    time, the merchants' (no labels here)."""
    x, ids = replay(txs)
    model = load(s.models_dir, "champion-v1")
    return dict(zip(ids, map(float, model.predict(np.asarray(x, dtype=np.float32))), strict=True))


def _metric(w: Worker, name: str) -> float:
    _, text = w.get("/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_transactions_and_labels_from_the_crc32_partitioner_are_decided_and_joined_once(
    env: tuple[Settings, Worker],
) -> None:
    s, w = env
    txs = [e.tx for e in generate(SimConfig(seed=31, n_cards=150, fraud_rate=0.05), n=600)]
    items = [(tx.card_id.encode(), encode_transaction(tx)) for tx in txs]
    off = sum(crc32_partition(k) != home(k, PARTITIONS) for k, _ in items)
    assert off > len(items) // 4  # most cards land elsewhere than murmur2 would put them
    _publish(s, s.topic_transactions, items)

    msgs = wait_for(s, [s.topic_decisions], len(txs))
    decided = Counter(orjson.loads(m.value())["transaction_id"] for m in msgs)
    assert decided == Counter(tx.transaction_id for tx in txs), "each decided exactly once"
    # With its card's whole history (so in its card's partition, where the API decides too):
    # the scores of an independent replay of each card's transactions.
    want = _offline_scores(s, txs)
    for m in msgs:
        d = orjson.loads(m.value())
        assert d["score"] == pytest.approx(want[d["transaction_id"]], abs=1e-6), d["transaction_id"]
    assert len(read_all(s, [s.topic_transactions_repartition])) == off
    assert _metric(w, "fraudstream_transactions_moved_total") == off
    # The moved path's lag is reported like the others' (alerts and autoscaling see it).
    lag = {
        p: f'fraudstream_consumer_lag{{partition="{p}",topic="{s.topic_transactions_repartition}"}}'
        for p in range(PARTITIONS)
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, text = w.get("/metrics")
        seen = {
            p: line.split()[-1]
            for line in text.splitlines()
            for p, n in lag.items()
            if line.startswith(n)
        }
        if seen == dict.fromkeys(lag, "0.0"):
            break
        time.sleep(1.0)
    assert seen == dict.fromkeys(lag, "0.0")
    assert read_all(s, [s.topic_dlq]) == []

    # Labels the same way: every one joined, outcomes as recomputed from the decisions.
    decisions = {orjson.loads(m.value())["transaction_id"]: orjson.loads(m.value()) for m in msgs}
    labels = [
        Feedback(tx.transaction_id, i % 7 == 0, "chargeback", "2026-11-20T10:00:00+00:00")
        for i, tx in enumerate(txs[:300])
    ]
    fb_items = [(fb.transaction_id.encode(), encode_feedback(fb)) for fb in labels]
    fb_off = sum(crc32_partition(k) != home(k, PARTITIONS) for k, _ in fb_items)
    _publish(s, s.topic_feedback, fb_items)
    expected = {
        fb.transaction_id: classify(decisions[fb.transaction_id]["decision"], fb.is_fraud)
        for fb in labels
    }
    got: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while got != expected and time.monotonic() < deadline:
        time.sleep(1.0)
        got = {
            o["transaction_id"]: o["outcome"]
            for o in (orjson.loads(m.value()) for m in read_all(s, [s.topic_outcomes]))
        }
    assert got == expected
    assert read_all(s, [s.topic_feedback_dlq]) == []
    assert _metric(w, "fraudstream_feedback_moved_total") == fb_off


def test_the_api_answers_with_the_state_of_a_card_published_with_crc32(
    env: tuple[Settings, Worker],
) -> None:
    s, w = env
    card = next(
        c
        for c in (f"card-api-{i}" for i in range(999))
        if crc32_partition(c.encode()) != home(c.encode(), PARTITIONS)
    )
    a = _tx(card, 1, 0, amount=12.0)
    b = _tx(card, 2, 3, amount=900.0, merchant_id="m-new", device_id="dev-new")
    _publish(s, s.topic_transactions, [(card.encode(), orjson.dumps(a))])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(m.key() == a["transaction_id"].encode() for m in read_all(s, [s.topic_decisions])):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the stream did not decide the first transaction")

    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=15)
    conn.request(
        "POST", "/v1/score", body=orjson.dumps(b), headers={"Content-Type": "application/json"}
    )
    r = conn.getresponse()
    got = orjson.loads(r.read())
    assert r.status == 200, got
    # The card's state from the stream was used: the score of the history [A, B], not [B].
    history = [decode_transaction(orjson.dumps(t)) for t in (a, b)]
    with_a = _offline_scores(s, history)[b["transaction_id"]]
    alone = _offline_scores(s, history[1:])[b["transaction_id"]]
    assert got["score"] == pytest.approx(with_a, abs=1e-6)
    assert got["score"] != pytest.approx(alone, abs=1e-6)
