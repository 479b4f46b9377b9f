"""The scoring pipeline end to end: a real broker, a real worker process (issue: score every
transaction)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from fraudstream.core import features
from fraudstream.core.entity import nothing_known
from fraudstream.core.messages import Routing, Transaction, decode_transaction, encode_transaction
from fraudstream.core.registry import load
from fraudstream.core.replay import replay
from fraudstream.core.routing import assign
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.kafka.control import publish_routing
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import REPO, Worker, fresh_settings, settings_env, wait_for

pytestmark = pytest.mark.integration

SALT = "it-salt"


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Worker]]:
    logs = tmp_path_factory.mktemp("pipeline")
    s = fresh_settings(
        kafka_bootstrap,
        partitions=2,
        champion="champion-v1",
        challenger="challenger-v2",
        challenger_share=0.3,
        shadow=True,
        routing_salt=SALT,
    )
    create_topics(s)
    w = Worker(s, "worker-1", logs).start()
    try:
        w.wait_ready()
        yield s, w
    finally:
        w.stop()


def _send(
    s: Settings, txs: list[Transaction], raw: list[tuple[bytes | None, bytes | None]] | None = None
) -> None:
    p = make_producer(s, **{"message.max.bytes": 4_000_000})
    for tx in txs:
        p.produce(s.topic_transactions, key=tx.card_id.encode(), value=encode_transaction(tx))
    for key, value in raw or []:
        p.produce(s.topic_transactions, key=key, value=value)
    assert p.flush(30) == 0


def _decisions(s: Settings, want: int, timeout: float = 90) -> dict[str, dict]:
    msgs = wait_for(s, [s.topic_decisions], want, timeout)
    out: dict[str, dict] = {}
    for m in msgs:
        d = orjson.loads(m.value())
        assert m.key() == d["transaction_id"].encode()
        assert d["transaction_id"] not in out, "two decisions for one transaction"
        out[d["transaction_id"]] = d
    return out


def _sim(seed: int, n: int, **cfg: object) -> list[Transaction]:
    return [e.tx for e in generate(SimConfig(seed=seed, **cfg), n=n)]  # type: ignore[arg-type]


def test_every_transaction_gets_one_decision_and_version_tagged_scores(
    pipeline: tuple[Settings, Worker],
) -> None:
    s, _ = pipeline
    txs = _sim(seed=11, n=3000, n_cards=1500)
    _send(s, txs)
    decisions = _decisions(s, len(txs))
    assert set(decisions) == {t.transaction_id for t in txs}
    for d in decisions.values():
        assert d["variant"] in ("champion", "challenger")
        assert d["model_version"] == (
            "challenger-v2" if d["variant"] == "challenger" else "champion-v1"
        )
        assert d["decision"] in ("approve", "review", "decline")
        assert 0.0 <= d["score"] <= 1.0
        assert d["schema_version"] == 1
        if d["decision"] != "approve":
            assert 1 <= len(d["reasons"]) <= 3
    scores = defaultdict(list)
    for m in wait_for(s, [s.topic_scores], 2 * len(txs)):
        sc = orjson.loads(m.value())
        scores[sc["transaction_id"]].append(sc)
    for txid, d in decisions.items():
        roles = {sc["role"]: sc for sc in scores[txid]}
        assert set(roles) == {d["variant"], "shadow"}, txid
        assert roles[d["variant"]]["model_version"] == d["model_version"]
        assert roles[d["variant"]]["score"] == d["score"]
        assert roles["shadow"]["model_version"] != d["model_version"]

    # Sticky per card, and the challenger's share of cards within a 99% binomial interval.
    variant_of: dict[str, set[str]] = defaultdict(set)
    for t in txs:
        variant_of[t.card_id].add(decisions[t.transaction_id]["variant"])
        assert decisions[t.transaction_id]["variant"] == assign(t.card_id, SALT, 0.3)
    assert all(len(v) == 1 for v in variant_of.values())
    n = len(variant_of)
    k = sum("challenger" in v for v in variant_of.values())
    half = 2.576 * math.sqrt(0.3 * 0.7 / n)
    assert abs(k / n - 0.3) <= half, (k, n)

    # `fraudstream tail` shows them.
    env = settings_env(s)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fraudstream",
            "tail",
            s.topic_decisions,
            "-n",
            "3",
            "--timeout",
            "10",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.count('"decided_at"') == 3


def test_route_change_applies_live_and_cards_only_move_to_the_challenger(
    pipeline: tuple[Settings, Worker],
) -> None:
    s, w = pipeline
    start = len(read_all(s, [s.topic_decisions]))
    before = _sim(seed=21, n=600, n_cards=400)
    _send(s, before)
    _decisions(s, start + len(before))
    routing = Routing("champion-v1", "challenger-v2", 0.7, True, SALT, "2026-11-25T00:00:00+00:00")
    t0 = time.monotonic()
    publish_routing(s, routing)
    deadline = t0 + 30
    while time.monotonic() < deadline:
        status, body = w.get("/v1/models")
        if status == 200 and body["routing"]["challenger_share"] == 0.7:
            break
        time.sleep(0.2)
    applied_s = time.monotonic() - t0
    assert applied_s < 10, f"routing took {applied_s:.1f}s to apply"
    # The same cards again, later in event time.
    later = [replace(t, transaction_id=f"{t.transaction_id}-later") for t in before]
    _send(s, later)
    all_decisions = _decisions(s, start + len(before) + len(later))
    moved = Counter()
    for t0_, t1 in zip(before, later, strict=True):
        a = all_decisions[t0_.transaction_id]["variant"]
        b = all_decisions[t1.transaction_id]["variant"]
        moved[(a, b)] += 1
        assert b == assign(t1.card_id, SALT, 0.7)
    assert moved[("challenger", "champion")] == 0
    assert moved[("champion", "challenger")] > 0
    publish_routing(s, replace(routing, challenger_share=0.3))


BAD = {
    "not_json": b"{this is not json",
    "not_utf8": b"\xff\xfe\xfa not utf-8",
    "empty": b"",
    "not_object": b"[1, 2, 3]",
}


def test_bad_input_is_dead_lettered_with_reasons_and_valid_input_still_decided(
    pipeline: tuple[Settings, Worker],
) -> None:
    s, w = pipeline
    good = _sim(seed=31, n=200, n_cards=100)
    base = orjson.loads(encode_transaction(good[0]))

    def variant(**change: object) -> bytes:
        d = {**base, "transaction_id": f"bad-{uuid.uuid4().hex[:10]}", **change}
        return orjson.dumps({k: v for k, v in d.items() if v is not None})

    missing = {**base, "transaction_id": "bad-missing"}
    del missing["amount"]
    key = good[0].card_id.encode()
    bad: list[tuple[bytes | None, bytes | None, str]] = [
        (key, BAD["not_json"], "not_json"),
        (key, BAD["not_utf8"], "not_utf8"),
        (key, BAD["empty"], "empty"),
        (key, None, "empty"),
        (key, BAD["not_object"], "not_object"),
        (key, orjson.dumps(missing), "schema"),
        (key, variant(amount="12.50"), "schema"),
        (key, variant(amount=-5), "schema"),
        (key, variant(currency="XYZ"), "bad_currency"),
        (key, variant(event_time="2026-13-45T25:61:00+00:00"), "bad_timestamp"),
        (key, variant(card_id="4111111111111111"), "card_number"),
        (None, variant(), "key_mismatch"),
        (key, b"x" * 1_100_000, "too_large"),
    ]
    before = len(read_all(s, [s.topic_decisions]))
    _send(s, good[:100], [(k, v) for k, v, _ in bad])
    _send(s, good[100:])
    _decisions(s, before + len(good))
    dlq = wait_for(s, [s.topic_dlq], len(bad))
    assert len(dlq) >= len(bad)
    got = Counter()
    for m in dlq:
        h = {k: v.decode() for k, v in (m.headers() or [])}
        assert set(h) >= {
            "error.class",
            "error.message",
            "origin.topic",
            "origin.partition",
            "origin.offset",
        }
        assert h["origin.topic"] == s.topic_transactions
        assert "4111111111111111" not in h["error.message"]
        got[h["error.class"]] += 1
    want = Counter(reason for _, _, reason in bad)
    for reason, n in want.items():
        assert got[reason] >= n, (reason, got)
    # Untouched: the dead letter carries the original bytes.
    assert {m.value() for m in dlq} >= {v for _, v, _ in bad if v}
    assert w.proc is not None
    assert w.proc.poll() is None


def test_a_repeated_transaction_id_gets_one_decision(pipeline: tuple[Settings, Worker]) -> None:
    s, _ = pipeline
    txs = _sim(seed=41, n=50, n_cards=30)
    before = len(read_all(s, [s.topic_decisions]))
    _send(s, txs)
    _send(s, txs[:20])  # an upstream retry
    marker = _sim(seed=42, n=10, n_cards=10)
    _send(s, marker)
    decisions = _decisions(s, before + len(txs) + len(marker))
    assert len(decisions) == before + len(txs) + len(marker)


def test_per_card_state_survives_a_worker_restart(
    pipeline: tuple[Settings, Worker], tmp_path: Path
) -> None:
    s, w = pipeline
    card = f"card-restart-{uuid.uuid4().hex[:6]}"
    t0 = 1_780_000_000.0
    history = [
        Transaction(
            f"rs-{card}-{i}",
            card,
            f"m-{i % 2}",
            40.0 + i,
            "EUR",
            "",
            t0 + 600 * i,
            3600,
            5411,
            "FR",
            "pos",
            "dev-1",
        )
        for i in range(4)
    ]
    history = [
        decode_transaction(encode_transaction(replace(t, event_time=_iso(t.ts, 3600))))
        for t in history
    ]
    before = len(read_all(s, [s.topic_decisions]))
    _send(s, history[:3])
    _decisions(s, before + 3)
    w.stop()
    w.start()
    w.wait_ready()
    _send(s, history[3:])
    d = _decisions(s, before + 4)[history[3].transaction_id]
    # The training path, entity state included (the history sits inside one hour: its merchant
    # counts are past every cutoff here, the same offline and live).
    x, ids = replay(history)
    assert ids[-1] == history[3].transaction_id
    model = load(s.models_dir, d["model_version"]).predict(np.asarray(x[-1:], dtype=np.float32))
    fresh = features.step(None, history[3], nothing_known)[1]
    model_fresh = load(s.models_dir, d["model_version"]).predict(
        np.asarray([fresh], dtype=np.float32)
    )
    assert d["score"] == pytest.approx(float(model[0]), abs=1e-6)
    assert float(model[0]) != pytest.approx(float(model_fresh[0]), abs=1e-6)


def _iso(ts: float, offset_s: int) -> str:
    from datetime import datetime, timedelta, timezone

    return datetime.fromtimestamp(ts, timezone(timedelta(seconds=offset_s))).isoformat()
