"""Feedback per model version: outcomes, FP/FN topics and per-version counts against an
independent recomputation, label reversal, restart, unknown labels (real broker, real worker)."""

from __future__ import annotations

import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer

from fraudstream.app.partitioning import home
from fraudstream.core.messages import Feedback, encode_feedback, encode_transaction
from fraudstream.core.outcomes import classify
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, feedback_schedule, generate
from tests.integration.procs import Worker, fresh_settings, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Worker]]:
    s = fresh_settings(
        kafka_bootstrap,
        partitions=2,
        champion="champion-v1",
        challenger="challenger-v2",
        challenger_share=0.5,
        shadow=True,
        metrics_publish_seconds=1.0,
        feedback_grace_seconds=3.0,
    )
    create_topics(s)
    w = Worker(s, "worker-fb", tmp_path_factory.mktemp("fb")).start()
    try:
        w.wait_ready()
        yield s, w
    finally:
        w.stop()


def _produce(
    s: Settings, topic: str, items: list[tuple[str, bytes]], *, client_default: bool = False
) -> None:
    """Publish keyed records, with the project's producer (murmur2, Java's default) or, with
    ``client_default``, confluent-kafka's default one (librdkafka's CRC32-based partitioner)."""
    p = Producer(s.kafka_client_config()) if client_default else make_producer(s)
    for key, value in items:
        p.produce(topic, key=key.encode(), value=value)
    assert p.flush(30) == 0


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``consistent_random`` for a keyed record: CRC32 of the key."""
    return zlib.crc32(key) % partitions


def _latest_outcomes(s: Settings) -> dict[tuple[str, str, str], dict]:
    latest = {}
    for m in read_all(s, [s.topic_outcomes]):
        o = orjson.loads(m.value())
        latest[(o["transaction_id"], o["model_version"], o["variant"])] = o
    return latest


def _published_counts(s: Settings) -> Counter[tuple[str, str, str]]:
    last: dict[bytes, dict] = {}
    for m in read_all(s, [s.topic_metrics]):
        last[m.key()] = orjson.loads(m.value())
    counts: Counter[tuple[str, str, str]] = Counter()
    for key, conf in last.items():
        _, version, variant = key.decode().split("|", 2)
        for cell in ("tp", "fp", "tn", "fn"):
            counts[(version, variant, cell.upper())] += conf[cell]
    return counts


def _wait_equal(fn, view, expected, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    """Poll ``fn`` until ``view(fn())`` equals ``expected`` (or time runs out); return fn()."""
    deadline = time.monotonic() + timeout
    got = fn()
    while view(got) != expected and time.monotonic() < deadline:
        time.sleep(1.0)
        got = fn()
    return got


def _settle(fn, timeout: float = 90.0, quiet: float = 3.0, until=None):  # type: ignore[no-untyped-def]
    """Call ``fn`` until its result equals ``until`` (when given) or, having changed, stops
    changing for ``quiet`` seconds. A busy machine may take a while to start: be patient."""
    deadline = time.monotonic() + timeout
    first = last = fn()
    since = time.monotonic()
    while time.monotonic() < deadline:
        if until is not None and last == until:
            return last
        time.sleep(1.0)
        now = fn()
        if now != last:
            last, since = now, time.monotonic()
        elif until is None and now != first and time.monotonic() - since >= quiet:
            return now
    return last


def test_outcomes_and_counts_equal_an_independent_recomputation(
    env: tuple[Settings, Worker],
) -> None:
    s, w = env
    events = list(generate(SimConfig(seed=5, n_cards=800, fraud_rate=0.02), n=3000))
    _produce(s, s.topic_transactions, [(e.tx.card_id, encode_transaction(e.tx)) for e in events])
    decisions = {
        orjson.loads(m.value())["transaction_id"]: orjson.loads(m.value())
        for m in wait_for(s, [s.topic_decisions], len(events))
    }
    scores = [orjson.loads(m.value()) for m in wait_for(s, [s.topic_scores], 2 * len(events))]
    shadow = {sc["transaction_id"]: sc for sc in scores if sc["role"] == "shadow"}
    labels = feedback_schedule(
        events, missing_share=0.1, reversal_share=0.1, seed=3, legit_label_share=0.2
    )
    # Some labels are reversals (a second label for the same transaction).
    assert len({fb.transaction_id for _, fb in labels}) < len(labels)
    # Published as kcat, confluent-kafka for Python/Go/.NET publish by default: CRC32, so most
    # labels land off their decision's partition and reach the join through the mover.
    items = [(fb.transaction_id, encode_feedback(fb)) for _, fb in labels]
    _produce(s, s.topic_feedback, items, client_default=True)
    off = sum(
        crc32_partition(tid.encode(), s.partitions) != home(tid.encode(), s.partitions)
        for tid, _ in items
    )
    assert off > len(items) // 4

    # The independent recomputation: the last label per transaction decides its outcome.
    final: dict[str, bool] = {}
    for _, fb in labels:
        final[fb.transaction_id] = fb.is_fraud
    expected: dict[tuple[str, str, str], str] = {}
    for txid, is_fraud in final.items():
        d = decisions[txid]
        expected[(txid, d["model_version"], d["variant"])] = classify(d["decision"], is_fraud)
        sh = shadow[txid]
        expected[(txid, sh["model_version"], "shadow")] = classify(sh["decision"], is_fraud)

    latest = _wait_equal(
        lambda: _latest_outcomes(s), lambda got: {k: o["outcome"] for k, o in got.items()}, expected
    )
    got = {k: o["outcome"] for k, o in latest.items()}
    assert got == expected
    for (txid, _, _), o in latest.items():
        assert o["is_fraud"] == final[txid]
        assert o["amount"] == decisions[txid]["amount"]
        assert o["schema_version"] == 1

    want_counts = Counter((v, var, cell) for (_, v, var), cell in expected.items())
    got_counts = _settle(
        lambda: Counter({k: n for k, n in _published_counts(s).items() if n}),
        until=Counter(want_counts),
    )
    assert {k: n for k, n in got_counts.items() if n} == dict(want_counts)

    # Every misplaced label was moved once (a reversal is a label of its own), none refused.
    moved = read_all(s, [s.topic_feedback_repartition])
    assert len(moved) == off
    assert read_all(s, [s.topic_feedback_dlq]) == []
    _, text = w.get("/metrics")
    assert f"fraudstream_feedback_moved_total {float(off)}" in text

    # FP and FN topics carry exactly the FP and FN outcomes written to fraud.outcomes.
    every = [orjson.loads(m.value()) for m in read_all(s, [s.topic_outcomes])]
    fps = [orjson.loads(m.value()) for m in read_all(s, [s.topic_false_positives])]
    fns = [orjson.loads(m.value()) for m in read_all(s, [s.topic_false_negatives])]
    assert sorted(map(orjson.dumps, fps)) == sorted(
        orjson.dumps(o) for o in every if o["outcome"] == "FP"
    )
    assert sorted(map(orjson.dumps, fns)) == sorted(
        orjson.dumps(o) for o in every if o["outcome"] == "FN"
    )


def test_a_reversed_label_moves_one_count_and_counts_survive_a_restart(
    env: tuple[Settings, Worker],
) -> None:
    s, w = env
    events = list(generate(SimConfig(seed=9, n_cards=50), n=40))
    _produce(s, s.topic_transactions, [(e.tx.card_id, encode_transaction(e.tx)) for e in events])
    tx = events[-1].tx
    wait_for(s, [s.topic_decisions], 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(m.key() == tx.transaction_id.encode() for m in read_all(s, [s.topic_decisions])):
            break
        time.sleep(1)

    def nonzero() -> Counter[tuple[str, str, str]]:
        return Counter({k: n for k, n in _published_counts(s).items() if n})

    start = _settle(nonzero, quiet=3.0, until=None, timeout=10.0)
    first = Feedback(tx.transaction_id, False, "analyst", "2026-11-25T10:00:00+00:00")
    _produce(s, s.topic_feedback, [(tx.transaction_id, encode_feedback(first))])
    total = start.total() + 2  # the deciding model's record and the shadow's
    before = _wait_equal(nonzero, lambda c: c.total(), total)
    assert before.total() == total
    flipped = Feedback(tx.transaction_id, True, "chargeback", "2026-11-26T10:00:00+00:00")
    _produce(s, s.topic_feedback, [(tx.transaction_id, encode_feedback(flipped))])
    after = _wait_equal(nonzero, lambda c: c != before, True)
    diff = {k: after[k] - before[k] for k in set(before) | set(after) if after[k] != before[k]}
    # Two records move (the deciding model's and the shadow's): one cell -1, one cell +1 each.
    assert sorted(diff.values()) == [-1, -1, 1, 1], diff
    for version, variant in {(v, var) for v, var, _ in diff}:
        cells = {cell: n for (v, var, cell), n in diff.items() if (v, var) == (version, variant)}
        assert sorted(cells.values()) == [-1, 1]
        assert set(cells) in ({"TN", "FN"}, {"FP", "TP"})

    w.stop()
    w.start()
    w.wait_ready()
    again = Feedback(tx.transaction_id, False, "analyst", "2026-11-27T10:00:00+00:00")
    _produce(s, s.topic_feedback, [(tx.transaction_id, encode_feedback(again))])
    restored = _wait_equal(nonzero, lambda c: c, before)
    # Back where it was before the reversal: the counts continued from the restored table.
    assert restored == before


def test_feedback_for_an_unknown_transaction_is_counted_and_dead_lettered(
    env: tuple[Settings, Worker],
) -> None:
    s, w = env
    ghost = Feedback(f"never-{uuid.uuid4().hex[:8]}", True, "customer", "2026-11-25T10:00:00+00:00")
    raw = encode_feedback(ghost)
    _produce(s, s.topic_feedback, [(ghost.transaction_id, raw)])
    dlq = wait_for(s, [s.topic_feedback_dlq], 1, timeout=60)
    mine = [m for m in dlq if m.key() == ghost.transaction_id.encode()]
    assert len(mine) == 1
    headers = {k: v.decode() for k, v in mine[0].headers() or []}
    assert headers["error.class"] == "unknown_transaction"
    assert headers["origin.topic"] == s.topic_feedback
    assert mine[0].value() == raw
    _, text = w.get("/metrics")
    assert "fraudstream_feedback_unknown_total 1.0" in text
