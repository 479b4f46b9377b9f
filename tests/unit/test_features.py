"""The feature code: windows, sentinels, serialisation, out-of-order events, no NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fraudstream.core import entity as en
from fraudstream.core import features as fx
from fraudstream.core.messages import Transaction
from fraudstream.core.replay import Entities, LabelEvent, replay
from fraudstream.sim.generator import SimConfig, generate

NONE = en.nothing_known

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
IDX = {name: i for i, name in enumerate(fx.FEATURE_NAMES)}


def tx(
    ts: float,
    amount: float = 10.0,
    *,
    card: str = "card-000001",
    merchant: str = "m-1",
    n: int = 0,
    offset: int = 0,
    mcc: int | None = 5411,
    country: str | None = "FR",
    channel: str | None = "pos",
    device: str | None = None,
) -> Transaction:
    return Transaction(
        transaction_id=f"t-{n}-{ts}",
        card_id=card,
        merchant_id=merchant,
        amount=amount,
        currency="EUR",
        event_time="",
        ts=ts,
        utc_offset_s=offset,
        mcc=mcc,
        country=country,
        channel=channel,
        device_id=device,
    )


def run(txs: list[Transaction]) -> list[list[float]]:
    state = None
    rows = []
    for t in txs:
        state, row = fx.step(state, t, NONE)
        rows.append(row)
    return rows


def f(row: list[float], name: str) -> float:
    return row[IDX[name]]


def test_names_are_unique_and_versioned() -> None:
    assert len(set(fx.FEATURE_NAMES)) == len(fx.FEATURE_NAMES) == fx.N_FEATURES
    assert set(fx.STATELESS_FEATURES) <= set(fx.FEATURE_NAMES)
    assert fx.FEATURE_NAMES[fx.CARD_FEATURE_SLICE] == fx.CARD_FEATURES
    assert fx.FEATURE_NAMES[fx.ENTITY_FEATURE_SLICE] == fx.ENTITY_FEATURES
    assert fx.FEATURE_SET_VERSION == "fs2"
    assert fx.FEATURE_SET_VERSION


def test_first_transaction_sentinels() -> None:
    state, row = fx.step(None, tx(T0, 42.0, device="d1"), NONE)
    assert len(row) == fx.N_FEATURES
    for name in ("card_count_1h", "card_amount_1h", "card_count_24h", "card_count_7d"):
        assert f(row, name) == 0.0
    for name in ("amount_to_avg_24h", "amount_to_avg_7d", "amount_to_avg_30d"):
        assert f(row, name) == -1.0
    assert f(row, "card_age_days") == 0.0
    assert f(row, "card_devices") == 1.0
    # Nothing known about the merchant or the card's labels: the sentinels.
    assert row[fx.ENTITY_FEATURE_SLICE] == [
        *en.merchant_features(None, 0.0),
        -1.0,
        *en.card_label_features(None, 0.0),
    ]
    assert f(row, "secs_since_prev") == -1.0
    assert f(row, "amount_to_card_avg") == 1.0
    assert f(row, "new_merchant") == 1.0
    assert f(row, "new_device") == 1.0
    assert f(row, "foreign_country") == 0.0
    assert f(row, "countries_24h") == 1.0
    assert state.n == 1
    assert state.home == "FR"


def test_stateless_features() -> None:
    # 23:30 UTC on Thursday is 00:30 on Friday at +01:00.
    row = fx.stateless_features(tx(T0 + 23.5 * 3600, 99.0, offset=3600, channel="ecom"))
    assert row[IDX["local_hour"]] == 0.0
    assert row[IDX["local_weekday"]] == 4.0  # Friday
    assert row[IDX["amount"]] == 99.0
    assert row[IDX["log_amount"]] == pytest.approx(math.log1p(99.0))
    assert [row[IDX[c]] for c in ("channel_pos", "channel_ecom", "channel_atm")] == [0, 1, 0]
    missing = fx.stateless_features(tx(T0, mcc=None, channel=None))
    assert missing[IDX["mcc"]] == -1.0
    assert missing[IDX["mcc_risk"]] == -1.0
    assert sum(missing[IDX[c]] for c in ("channel_pos", "channel_ecom", "channel_atm")) == 0
    assert fx.stateless_features(tx(T0, mcc=7995))[IDX["mcc_risk"]] == 2.0
    assert fx.stateless_features(tx(T0, mcc=3005))[IDX["mcc_risk"]] == 1.0
    assert fx.stateless_features(tx(T0, device="x"))[IDX["has_device"]] == 1.0


def test_window_counts_and_sums() -> None:
    seq = [
        tx(T0, 10.0),
        tx(T0 + 600, 20.0),  # 10 min later
        tx(T0 + 3000, 2.0),  # 50 min
        tx(T0 + 3700, 4.0),  # 61:40 — the first one left the 1 h window
        tx(T0 + 20 * 3600, 100.0),  # 20 h
        tx(T0 + 30 * 3600, 1.0),  # 30 h — the first four left the 24 h window
        tx(T0 + 9 * 86400, 5.0),  # 9 days — everything left the 7 d window
    ]
    rows = run(seq)
    assert [f(r, "card_count_1h") for r in rows] == [0, 1, 2, 2, 0, 0, 0]
    assert f(rows[3], "card_amount_1h") == 22.0
    assert f(rows[3], "small_count_1h") == 1.0
    assert [f(r, "card_count_24h") for r in rows] == [0, 1, 2, 3, 4, 1, 0]
    assert f(rows[4], "card_amount_24h") == 36.0
    assert [f(r, "card_count_7d") for r in rows] == [0, 1, 2, 3, 4, 5, 0]
    assert f(rows[6], "card_amount_7d") == 0.0
    assert f(rows[1], "secs_since_prev") == 600.0
    assert f(rows[1], "amount_to_card_avg") == 2.0
    assert f(rows[4], "amount_to_card_avg") == pytest.approx(100.0 / 9.0)
    assert f(rows[1], "new_merchant") == 0.0


def test_24h_window_is_exact_to_the_hour() -> None:
    # Whole hour buckets: it looks back between 23 and 24 hours (the documented precision).
    rows = run([tx(T0 + 10, 1.0), tx(T0 + 10 + 23.9 * 3600, 1.0)])
    assert f(rows[1], "card_count_24h") == 1.0
    rows = run([tx(T0 + 3500, 1.0), tx(T0 + 3500 + 23.2 * 3600, 1.0)])
    assert f(rows[1], "card_count_24h") == 0.0


def test_card_testing_burst() -> None:
    seq = [tx(T0 + 30 * i, 1.5, merchant="m-test", channel="ecom") for i in range(12)]
    seq.append(tx(T0 + 400, 800.0, merchant="m-big", channel="ecom"))
    rows = run(seq)
    big = rows[-1]
    assert f(big, "small_count_1h") == 12.0
    assert f(big, "card_count_1h") == 12.0
    assert f(big, "new_merchant") == 1.0
    assert f(big, "amount_to_card_avg") == pytest.approx(800.0 / 1.5)


def test_one_hour_window_saturates_at_cap() -> None:
    seq = [tx(T0 + i, 1.0) for i in range(fx.RECENT_CAP + 20)]
    rows = run(seq)
    assert f(rows[-1], "card_count_1h") == fx.RECENT_CAP
    assert f(rows[-1], "card_count_24h") == len(seq) - 1  # buckets do not saturate


def test_device_merchant_and_country_memory() -> None:
    seq = [
        tx(T0, device="phone", merchant="a", country="FR"),
        tx(T0 + 60, device="phone", merchant="b", country="FR"),
        tx(T0 + 120, device="laptop", merchant="a", country="DE"),
        tx(T0 + 180, device=None, merchant="c", country="DE"),
        tx(T0 + 240, device="phone", merchant="c", country=None),
    ]
    rows = run(seq)
    assert [f(r, "new_device") for r in rows] == [1, 0, 1, 0, 0]
    assert [f(r, "new_merchant") for r in rows] == [1, 1, 0, 1, 0]
    assert [f(r, "foreign_country") for r in rows] == [0, 0, 1, 1, 0]
    assert [f(r, "countries_24h") for r in rows] == [1, 1, 2, 2, 2]


def test_merchant_lru_is_bounded() -> None:
    seq = [tx(T0 + i, merchant=f"m-{i}") for i in range(fx.MERCHANT_CAP + 10)]
    state = None
    for t in seq:
        state, _ = fx.step(state, t, NONE)
    assert state is not None
    assert len(state.merch) == fx.MERCHANT_CAP
    _, row = fx.step(state, tx(T0 + 1000, merchant="m-0"), NONE)  # evicted: new again
    assert f(row, "new_merchant") == 1.0
    _, row = fx.step(state, tx(T0 + 1000, merchant=f"m-{fx.MERCHANT_CAP + 9}"), NONE)
    assert f(row, "new_merchant") == 0.0


def test_out_of_order_events_are_tolerated() -> None:
    seq = [tx(T0 + 3600, 10.0), tx(T0 + 1800, 20.0), tx(T0 + 3700, 30.0), tx(T0 - 9 * 86400, 1.0)]
    rows = run(seq)
    late = rows[1]
    assert f(late, "secs_since_prev") == 0.0  # clamped, not negative
    assert f(late, "card_count_1h") == 0.0  # the newer event is not in its past hour
    assert f(rows[2], "card_count_1h") == 2.0
    very_late = rows[3]
    assert all(math.isfinite(v) for v in very_late)
    state = None
    for t in seq:
        state, _ = fx.step(state, t, NONE)
    assert state is not None
    assert state.h_h == sorted(state.h_h)
    assert state.d_d == sorted(state.d_d)
    assert state.last_ts == T0 + 3700


def test_step_never_modifies_its_input_state() -> None:
    state, _ = fx.step(None, tx(T0, 10.0, device="d"), NONE)
    before = fx.state_to_json(state)
    new, _ = fx.step(state, tx(T0 + 5, 3.0, merchant="zz", device="e", country="US"), NONE)
    assert fx.state_to_json(state) == before
    assert new is not state
    assert new.n == 2


@pytest.mark.parametrize(
    ("amount", "ts", "bad"),
    [
        (float("nan"), T0, {"amount", "log_amount"}),
        (float("inf"), T0, {"amount", "log_amount"}),
        (-1.0, T0, {"amount", "log_amount"}),
        (1e13, T0, {"amount", "log_amount"}),
        (1.0, float("nan"), {"local_hour", "local_weekday"}),
    ],
)
def test_unusable_input_gives_nan_where_it_is_and_keeps_state(
    amount: float, ts: float, bad: set[str]
) -> None:
    state, _ = fx.step(None, tx(T0 - 60, 5.0), NONE)
    same, row = fx.step(state, tx(ts, amount), NONE)
    assert same is state
    assert {n for n, v in zip(fx.FEATURE_NAMES, row, strict=True) if not math.isfinite(v)} == bad


def test_serialisation_round_trip_gives_identical_later_features() -> None:
    events = [e.tx for e in generate(SimConfig(seed=3, n_cards=50, n_merchants=60), days=3)]
    direct: dict[str, fx.CardState] = {}
    via_json: dict[str, bytes] = {}
    for t in events:
        st, row_a = fx.step(direct.get(t.card_id), t, NONE)
        direct[t.card_id] = st
        raw = via_json.get(t.card_id)
        st2, row_b = fx.step(None if raw is None else fx.state_from_json(raw), t, NONE)
        via_json[t.card_id] = fx.state_to_json(st2)
        assert row_a == row_b
        assert fx.state_to_json(st) == via_json[t.card_id]
        assert fx.CardState.from_obj(st.to_obj()) == st


def test_bad_state_is_refused() -> None:
    from fraudstream.errors import InvalidMessage

    with pytest.raises(InvalidMessage, match="card state"):
        fx.state_from_json(b"{}")
    with pytest.raises(InvalidMessage, match="not JSON"):
        fx.state_from_json(b"\xff")


def test_never_nan_over_a_simulated_day_and_small_states() -> None:
    events = [e.tx for e in generate(SimConfig(seed=5, n_cards=300), days=1.5)]
    states: dict[str, fx.CardState] = {}
    X = fx.step_many(states, events, NONE)
    assert X.shape == (len(events), fx.N_FEATURES)
    assert np.isfinite(X).all()
    sizes = [len(fx.state_to_json(s)) for s in states.values()]
    assert max(sizes) < 4096


def test_replay_sorts_by_event_time_then_id() -> None:
    a = tx(T0 + 10, 1.0, n=2)
    b = tx(T0 + 10, 2.0, n=1)
    c = tx(T0, 3.0, n=3)
    X, ids = replay([a, b, c])
    assert ids == [c.transaction_id, b.transaction_id, a.transaction_id]
    assert X[:, IDX["amount"]].tolist() == [3.0, 2.0, 1.0]
    assert X[2, IDX["card_count_1h"]] == 2.0
    empty, none = replay([])
    assert empty.shape == (0, fx.N_FEATURES)
    assert none == []


def test_30_day_windows_and_averages() -> None:
    day = 86400.0
    seq = [
        tx(T0, 10.0),
        tx(T0 + 3 * day, 30.0),
        tx(T0 + 20 * day, 20.0),
        tx(T0 + 20 * day + 60, 200.0),
        tx(T0 + 31.5 * day, 50.0),  # day 31: day 0 left the 30 d window (days 1 … 31)
    ]
    rows = run(seq)
    assert [f(r, "card_count_30d") for r in rows] == [0, 1, 2, 3, 3]
    assert [f(r, "card_count_7d") for r in rows] == [0, 1, 0, 1, 0]
    assert f(rows[3], "card_amount_30d") == 60.0
    assert f(rows[3], "amount_to_avg_30d") == pytest.approx(200.0 / 20.0)
    assert f(rows[3], "amount_to_avg_7d") == pytest.approx(200.0 / 20.0)
    assert f(rows[3], "amount_to_avg_24h") == pytest.approx(200.0 / 20.0)
    assert f(rows[4], "amount_to_avg_30d") == pytest.approx(50.0 / (250.0 / 3))
    assert f(rows[4], "amount_to_avg_24h") == -1.0
    assert f(rows[4], "card_age_days") == pytest.approx(31.5)


def test_devices_per_card() -> None:
    rows = run([tx(T0, device="a"), tx(T0 + 1, device="b"), tx(T0 + 2), tx(T0 + 3, device="a")])
    assert [f(r, "card_devices") for r in rows] == [1, 2, 2, 2]


def test_entity_features_come_from_the_lookup_as_of_the_cutoff() -> None:
    ents = Entities()
    day = 86400.0
    history = [tx(T0 + i * 3600.0, 40.0, card=f"c{i}", merchant="shop", n=i) for i in range(30)]
    for t in history:
        ents.absorb_tx(t)
    ents.absorb_label(history[0], T0 + 2 * day, True)  # reported two days later
    late = tx(T0 + 3 * day, 400.0, card="c0", merchant="shop", n=99)
    before = {t.transaction_id: t for t in history}
    snapshot = {k: v.to_bytes() for k, v in ents.states.items()}
    _, row = fx.step(None, late, ents.get)
    assert {k: v.to_bytes() for k, v in ents.states.items()} == snapshot  # only read
    assert f(row, "m_count_7d") == 30
    assert f(row, "m_frauds_30d") == 1
    assert f(row, "m_reported_1d") == 1
    assert f(row, "amount_to_merchant_avg") == pytest.approx(10.0)
    assert f(row, "c_frauds_30d") == 1  # the card c0 had the fraud
    assert f(row, "c_days_since_fraud") == pytest.approx((en.cutoff(late.ts) - T0) / day)
    # Before the label was reported, nothing was known about it.
    _, early = fx.step(None, tx(T0 + 2 * day, 1.0, card="c0", merchant="shop"), ents.get)
    assert f(early, "m_frauds_30d") == 0
    assert f(early, "c_frauds_30d") == 0
    assert before  # the history itself is untouched


def test_replay_applies_labels_when_they_arrive() -> None:
    day = 86400.0
    txs = [tx(T0 + i * day, 10.0, card="c1", merchant="m", n=i) for i in range(12)]
    labels = [LabelEvent(txs[0].transaction_id, T0 + 5 * day + 1, True)]
    X, _ = replay(txs, labels)
    col = fx.FEATURE_NAMES.index("m_frauds_30d")
    assert X[:, col].tolist() == [0] * 6 + [1] * 6  # known from the cutoff after its arrival
    X_none, _ = replay(txs, labels, with_entities=False)
    assert (X_none[:, col] == 0).all()


def test_format_1_state_upgrades_without_losing_windows() -> None:
    hour0 = int(T0 // 3600)
    hours = [hour0, hour0 + 30, hour0 + 99, hour0 + 100]
    obj = [1, 5, 5000, T0 + 100 * 3600.0, "FR", [], [], hours, [1, 2, 1, 1],
           [1000, 2000, 1000, 1000], [7], [8], ["FR"], [hour0 + 100]]  # fmt: skip
    st = fx.CardState.from_obj(obj)
    assert st.h_h == [hour0 + 99, hour0 + 100]  # the last day stays hourly
    assert sum(st.d_n) == 5
    assert st.d_d == [int(T0 // 86400) + d for d in (0, 1, 4)]
    assert st.first_ts == T0  # every transaction is in the buckets
    _, row = fx.step(st, tx(T0 + 100.5 * 3600, 10.0), NONE)
    assert f(row, "card_count_7d") == 5
    assert f(row, "card_count_24h") == 2
    assert fx.CardState.from_obj(st.to_obj()) == st
    obj[1] = 9  # more transactions than the buckets hold: the age is a lower bound
    assert fx.CardState.from_obj(obj).first_ts == T0 + 100 * 3600.0 - 8 * 86400.0
