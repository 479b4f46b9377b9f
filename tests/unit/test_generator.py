"""The simulator: deterministic, ordered, realistic enough, and valid on the wire."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import pytest

from fraudstream.core.messages import decode_transaction, encode_transaction
from fraudstream.sim.files import read_labelled, write_labelled
from fraudstream.sim.generator import (
    FRAUD_KINDS,
    SimConfig,
    SimEvent,
    feedback_schedule,
    format_event_time,
    simulate,
)

SMALL = {"n_cards": 400, "n_merchants": 150}


@pytest.fixture(scope="module")
def month() -> list[SimEvent]:
    # Enough traffic for every fraud kind, at a raised fraud rate so the estimate is stable.
    return simulate(days=30, seed=4, n_cards=800, n_merchants=300, fraud_rate=0.01)


def test_same_seed_same_events_other_seed_other_events() -> None:
    a = simulate(n=3000, seed=1, **SMALL)
    b = simulate(n=3000, seed=1, **SMALL)
    c = simulate(n=3000, seed=2, **SMALL)
    assert a == b
    assert a != c
    # A shorter run is a prefix of a longer one.
    assert simulate(n=1000, seed=1, **SMALL) == a[:1000]


def test_event_time_order_unique_ids_and_tokens(month: list[SimEvent]) -> None:
    ts = [e.tx.ts for e in month]
    assert ts == sorted(ts)
    ids = [e.tx.transaction_id for e in month]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"card-\d{6}", e.tx.card_id) for e in month)
    assert month[0].tx.ts >= datetime.fromisoformat("2026-01-01T00:00:00Z").timestamp()
    assert month[-1].tx.ts < datetime.fromisoformat("2026-01-31T00:00:00Z").timestamp()


def test_event_time_string_matches_ts_and_offset(month: list[SimEvent]) -> None:
    for e in month[::97]:
        dt = datetime.fromisoformat(e.tx.event_time)
        assert dt.timestamp() == e.tx.ts
        offset = dt.utcoffset()
        assert offset is not None
        assert offset.total_seconds() == e.tx.utc_offset_s
    assert len({e.tx.utc_offset_s for e in month}) >= 3
    assert format_event_time(1_767_225_600_123, -18000) == "2025-12-31T19:00:00.123-05:00"


def test_fraud_rate_near_configured_and_all_kinds(month: list[SimEvent]) -> None:
    rate = sum(e.is_fraud for e in month) / len(month)
    assert 0.007 < rate < 0.013
    kinds = Counter(e.fraud_kind for e in month if e.is_fraud)
    assert set(kinds) == set(FRAUD_KINDS)
    assert all((e.fraud_kind is None) == (not e.is_fraud) for e in month)


def test_default_fraud_rate_is_a_few_per_thousand() -> None:
    events = simulate(days=20, seed=9, n_cards=1500)
    rate = sum(e.is_fraud for e in events) / len(events)
    assert 0.002 < rate < 0.006


def test_fraud_patterns_look_like_their_kind(month: list[SimEvent]) -> None:
    testing = [e.tx for e in month if e.fraud_kind == "card_testing"]
    assert sum(t.amount < 5.0 for t in testing) > len(testing) / 2
    ato = [e.tx for e in month if e.fraud_kind == "account_takeover"]
    assert all(t.channel in ("ecom", None) and t.device_id for t in ato)
    merchant = Counter(e.tx.merchant_id for e in month if e.fraud_kind == "compromised_merchant")
    assert merchant.most_common(1)[0][1] >= 10


def test_every_transaction_survives_the_wire(month: list[SimEvent]) -> None:
    for e in month:
        assert decode_transaction(encode_transaction(e.tx)) == e.tx


def test_days_and_n_limits() -> None:
    assert len(simulate(n=500, seed=0, **SMALL)) == 500
    one_day = simulate(days=1, seed=0, **SMALL)
    assert one_day[-1].tx.ts - one_day[0].tx.ts < 86400
    with pytest.raises(ValueError, match="fraud_rate"):
        SimConfig(fraud_rate=0.9)
    with pytest.raises(ValueError, match="give n"):
        simulate()


def test_feedback_schedule(month: list[SimEvent]) -> None:
    fb = feedback_schedule(month, delay_s=86400, missing_share=0.1, reversal_share=0.05, seed=3)
    assert fb == feedback_schedule(month, 86400, 0.1, 0.05, 3)
    dues = [d for d, _ in fb]
    assert dues == sorted(dues)
    ts_of = {e.tx.transaction_id: e.tx.ts for e in month}
    truth = {e.tx.transaction_id: e.is_fraud for e in month}
    assert all(d > ts_of[f.transaction_id] for d, f in fb)
    assert {f.source for _, f in fb} == {"chargeback", "analyst", "customer"}
    frauds = {i for i, y in truth.items() if y}
    labelled_frauds = {f.transaction_id for _, f in fb if truth[f.transaction_id]}
    assert 0.8 < len(labelled_frauds) / len(frauds) < 0.97  # ~10 % never arrive
    legit_labelled = {f.transaction_id for _, f in fb if not truth[f.transaction_id]}
    assert 0.02 < len(legit_labelled) / (len(truth) - len(frauds)) < 0.08
    per_tx = Counter(f.transaction_id for _, f in fb)
    reversed_ids = [i for i, c in per_tx.items() if c == 2]
    assert reversed_ids
    for i in reversed_ids[:20]:
        first, second = [f for _, f in fb if f.transaction_id == i]
        assert second.is_fraud != first.is_fraud
        assert second.reported_at > first.reported_at


@pytest.mark.parametrize("name", ["labelled.csv", "labelled.parquet", "labelled.csv.gz"])
def test_files_round_trip(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    events = simulate(n=800, seed=6, fraud_rate=0.05, **SMALL)
    path = tmp_path / name
    assert write_labelled(path, events) == 800
    back = read_labelled(path)
    assert [(t, y) for t, y, _ in events] == back


def test_file_column_mapping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bank.csv"
    path.write_text(
        "id,token,shop,value,ccy,when,label,channel\n"
        "a1,card-000001,m-9,12.5,eur,2026-02-01T10:00:00+01:00,1,pos\n"
        "a2,card-000001,m-9,3,EUR,2026-02-01T10:05:00Z,no,\n"
    )
    mapping = {
        "transaction_id": "id",
        "card_id": "token",
        "merchant_id": "shop",
        "amount": "value",
        "currency": "ccy",
        "event_time": "when",
        "is_fraud": "label",
    }
    rows = read_labelled(path, mapping)
    assert [y for _, y in rows] == [True, False]
    first = rows[0][0]
    assert first.currency == "EUR"
    assert first.utc_offset_s == 3600
    assert first.mcc is None
    assert first.channel == "pos"
    assert rows[1][0].channel is None
    assert rows[1][0].ts - first.ts == 3600 + 300


def test_file_errors_name_the_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fraudstream.errors import InvalidMessage

    path = tmp_path / "bad.csv"
    path.write_text(
        "transaction_id,card_id,merchant_id,amount,currency,event_time,is_fraud\n"
        "a,card-1,m,1,EUR,2026-02-01T10:00:00Z,0\n"
        "b,card-1,m,1,EUR,2026-02-01T10:00:00,0\n"
    )
    with pytest.raises(InvalidMessage, match=r"row 2: .*no UTC offset"):
        read_labelled(path)
    path.write_text("transaction_id,amount\nx,1\n")
    with pytest.raises(InvalidMessage, match="missing card_id"):
        read_labelled(path)
