"""Entity state: the cutoff rule, windows, labels (late, missing, reversed, repeated), order
independence, bounds and the binary round trip."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.core import entity as en
from fraudstream.core.entity import EntityState
from fraudstream.errors import InvalidMessage

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
M = {name: i for i, name in enumerate(en.MERCHANT_FEATURES)}
C = {name: i for i, name in enumerate(en.CARD_LABEL_FEATURES)}


def mf(state: EntityState | None, cut: float, name: str) -> float:
    return en.merchant_features(state, cut)[M[name]]


def cf(state: EntityState | None, cut: float, name: str) -> float:
    return en.card_label_features(state, cut)[C[name]]


def test_cutoff_is_the_hour_before_five_minutes_ago() -> None:
    assert en.cutoff(T0 + 3600 + 299) == T0
    assert en.cutoff(T0 + 3600 + 300) == T0 + 3600
    assert en.cutoff(T0 + 7199) == T0 + 3600
    for t in (T0 + 1.5, T0 + 4000.25, T0 - 12345.0):
        c = en.cutoff(t)
        assert c % 3600 == 0
        assert t - 3600 - 300 < c <= t - 300


def test_sentinels_when_nothing_is_known() -> None:
    assert len(en.merchant_features(None, T0)) == len(en.MERCHANT_FEATURES)
    assert en.merchant_features(None, T0) == en.merchant_features(EntityState(), T0)
    assert en.card_label_features(None, T0) == en.card_label_features(EntityState(), T0)
    assert mf(None, T0, "m_days_since_fraud") == -1.0
    assert cf(None, T0, "c_days_since_fraud") == -1.0
    assert en.nothing_known("m:x") is None


def test_windows_count_only_before_the_cutoff() -> None:
    s = EntityState()
    day10 = T0 + 10 * DAY
    s.absorb_tx(day10 + 5 * 3600 + 10, 1000)  # 05:00:10 on day 10
    s.absorb_tx(day10 + 5 * 3600 + 20, 3000)
    s.absorb_tx(day10 - 3 * DAY, 500)  # 3 days before
    s.absorb_tx(day10 - 20 * DAY, 700)  # 20 days before
    s.absorb_tx(day10 - 40 * DAY, 900)  # outside every window (and pruned)
    cut = day10 + 5 * 3600  # 05:00: the two at 05:00:10 are at/after the cutoff
    assert [mf(s, cut, k) for k in ("m_count_1d", "m_count_7d", "m_count_30d")] == [0, 1, 2]
    cut = day10 + 6 * 3600
    assert [mf(s, cut, k) for k in ("m_count_1d", "m_count_7d", "m_count_30d")] == [2, 3, 4]
    assert mf(s, cut, "m_avg_amount_30d") == pytest.approx((10 + 30 + 5 + 7) / 4)
    # 1 d is exactly the 24 hourly buckets before the cutoff.
    assert mf(s, day10 + 29 * 3600, "m_count_1d") == 2
    assert mf(s, day10 + 30 * 3600, "m_count_1d") == 0


def test_state_ahead_of_the_cutoff_gives_the_same_features() -> None:
    rng = random.Random(3)
    events = sorted(T0 + rng.uniform(0, 40 * DAY) for _ in range(400))
    for cut in (T0 + 20 * DAY, T0 + 33.5 * DAY + 3600 * 7):
        exact, ahead = EntityState(), EntityState()
        for t in events:
            if t < cut:
                exact.absorb_tx(t, 100)
            if t < cut + DAY:  # up to a day ahead: still exact
                ahead.absorb_tx(t, 100)
        assert en.merchant_features(exact, cut) == en.merchant_features(ahead, cut)


def label(s: EntityState, i: int, tx_ts: float, at: float, fraud: bool = True) -> None:
    s.absorb_label(f"t{i}", tx_ts, 1000, at, fraud)


def test_a_label_counts_only_once_reported_before_the_cutoff() -> None:
    s = EntityState()
    tx_ts = T0 + 5 * DAY
    s.absorb_tx(tx_ts, 1000)
    label(s, 1, tx_ts, tx_ts + 7 * DAY)  # reported a week later
    before, after = tx_ts + 7 * DAY, tx_ts + 7 * DAY + 3600
    assert mf(s, before, "m_frauds_30d") == 0  # reported_at == cutoff: not yet
    assert mf(s, after, "m_frauds_30d") == 1
    assert mf(s, after, "m_frauds_7d") == 0  # the transaction is 7 days old
    assert mf(s, after, "m_reported_1d") == 1
    assert mf(s, after + 2 * DAY, "m_reported_1d") == 0
    assert mf(s, after + 2 * DAY, "m_reported_7d") == 1
    assert mf(s, after, "m_days_since_fraud") == pytest.approx((after - tx_ts) / DAY)
    assert mf(s, after, "m_fraud_rate_30d") == 1.0


def test_late_label_changes_risk_only_from_its_arrival() -> None:
    s = EntityState()
    for i in range(4):
        s.absorb_tx(T0 + i * DAY, 100)
        label(s, i, T0 + i * DAY, T0 + 7 * DAY, fraud=i == 0)  # three genuine, one fraud
    cut = T0 + 8 * DAY
    assert mf(s, cut, "m_fraud_rate_30d") == 0.25
    label(s, 9, T0 + 2.5 * DAY, T0 + 20 * DAY)  # a chargeback 17.5 days late
    assert mf(s, cut, "m_frauds_30d") == 1  # not known at cut
    assert mf(s, T0 + 21 * DAY, "m_frauds_30d") == 2
    assert mf(s, T0 + 21 * DAY, "m_fraud_rate_30d") == 0.5
    # Known genuine after the newest known fraud (at T0 + 2.5 d): the one of T0 + 3 d.
    assert mf(s, T0 + 21 * DAY, "m_genuine_after_fraud") == 1
    assert mf(s, cut, "m_genuine_after_fraud") == 3  # before the chargeback: after T0
    # Since the oldest known fraud (T0): 1 of 4 labelled, then the chargeback makes it 2 of 5.
    assert mf(s, cut, "m_fraud_share_since_first") == 0.25
    assert mf(s, T0 + 21 * DAY, "m_fraud_share_since_first") == 0.4


def test_never_arriving_labels_leave_risk_at_what_is_known() -> None:
    s = EntityState()
    for i in range(10):
        s.absorb_tx(T0 + i * 3600, 100)
    cut = T0 + 20 * DAY
    assert mf(s, cut, "m_frauds_30d") == 0
    assert mf(s, cut, "m_fraud_rate_30d") == 0.0
    assert mf(s, cut, "m_days_since_fraud") == -1.0  # no fraud known, not "just now"
    assert mf(s, cut, "m_genuine_after_fraud") == -1.0
    assert mf(s, cut, "m_fraud_share_since_first") == -1.0


def test_reversed_labels_fraud_to_genuine_and_back() -> None:
    s = EntityState()
    tx_ts = T0
    label(s, 1, tx_ts, T0 + 2 * DAY, fraud=True)
    label(s, 1, tx_ts, T0 + 4 * DAY, fraud=False)
    label(s, 1, tx_ts, T0 + 6 * DAY, fraud=True)
    expect = {1: 0, 3: 1, 5: 0, 7: 1}
    for day, frauds in expect.items():
        assert cf(s, T0 + day * DAY, "c_frauds_30d") == frauds, day
        assert mf(s, T0 + day * DAY, "m_frauds_30d") == frauds, day
    # A report at the same instant as another: fraud wins the tie, in any order.
    a, b = EntityState(), EntityState()
    label(a, 1, tx_ts, T0 + DAY, fraud=False)
    label(a, 1, tx_ts, T0 + DAY, fraud=True)
    label(b, 1, tx_ts, T0 + DAY, fraud=True)
    label(b, 1, tx_ts, T0 + DAY, fraud=False)
    assert a == b
    assert cf(a, T0 + 2 * DAY, "c_frauds_30d") == 1


def test_duplicate_labels_change_nothing() -> None:
    s = EntityState()
    label(s, 1, T0, T0 + DAY)
    once = s.to_bytes()
    label(s, 1, T0, T0 + DAY)
    assert s.to_bytes() == once
    assert cf(s, T0 + 2 * DAY, "c_frauds_30d") == 1


def test_card_label_features() -> None:
    s = EntityState()
    label(s, 1, T0, T0 + 3 * DAY)
    label(s, 2, T0 + DAY, T0 + 3 * DAY, fraud=False)
    cut = T0 + 4 * DAY
    assert en.card_label_features(s, cut) == (1.0, 1.0, 4.0)
    assert cf(s, T0 + 11 * DAY, "c_reported_7d") == 0
    assert cf(s, T0 + 31 * DAY, "c_days_since_fraud") == -1.0  # outside the 30 d window


def test_labels_of_old_transactions_are_pruned_and_ignored() -> None:
    s = EntityState()
    s.absorb_tx(T0 + 40 * DAY, 100)
    label(s, 1, T0, T0 + 41 * DAY)  # a transaction 40 days older than the newest: ignored
    assert s.labels == {}
    s = EntityState()
    label(s, 1, T0, T0 + DAY)
    s.absorb_tx(T0 + 32.5 * DAY, 100)  # within the retention (whole days)
    assert list(s.labels) == ["t1"]
    s.absorb_tx(T0 + 33 * DAY, 100)  # the newest day moves on: the label is pruned
    assert s.labels == {}
    assert cf(s, T0 + 33 * DAY, "c_days_since_fraud") == -1.0


def test_bounded_size() -> None:
    s = EntityState()
    rng = random.Random(1)
    for i in range(20_000):
        t = T0 + i * 600.0  # ~139 days of a busy terminal
        s.absorb_tx(t, rng.randrange(100, 10_000))
        s.absorb_label(f"t{i}", t, 100, t + 3 * DAY, rng.random() < 0.1)
    assert len(s.hourly) <= en.HOURLY_KEEP_H + 24
    assert len(s.daily) <= en.DAILY_KEEP_D + 1
    assert len(s.labels) <= en.LABEL_CAP
    assert len(s.to_bytes()) < 40_000
    # The cap keeps the newest labelled transactions.
    newest = max(lab.tx_ts for lab in s.labels.values())
    assert newest == T0 + 19_999 * 600.0
    assert "t0" not in s.labels
    for i in range(en.REPORTS_CAP + 5):
        s.absorb_label("t19999", newest, 100, newest + DAY + i, i % 2 == 0)
    assert len(s.labels["t19999"].reports) == en.REPORTS_CAP


def test_round_trip_and_bad_bytes() -> None:
    s = EntityState()
    assert EntityState.from_bytes(s.to_bytes()) == s
    for i in range(50):
        s.absorb_tx(T0 + i * 3000.0, 100 + i)
        s.absorb_label(f"tx-é{i}", T0 + i * 3000.0, 100 + i, T0 + 3 * DAY + i, i % 3 == 0)
    s.absorb_label("tx-é1", T0 + 3000.0, 101, T0 + 5 * DAY, True)
    back = EntityState.from_bytes(s.to_bytes())
    assert back == s
    assert back.to_bytes() == s.to_bytes()
    cut = T0 + 6 * DAY
    assert en.merchant_features(back, cut) == en.merchant_features(s, cut)
    raw = s.to_bytes()
    for bad in (b"", b"\x07" + raw[1:], raw[:-3], raw + b"x"):
        with pytest.raises(InvalidMessage, match="entity state"):
            EntityState.from_bytes(bad)


def test_memo_never_serves_stale_features() -> None:
    s = EntityState()
    s.absorb_tx(T0, 100)
    cut = T0 + 2 * DAY
    first = en.merchant_features(s, cut)
    s.absorb_tx(cut + 10, 100)  # after the cutoff: the memo stays valid
    assert en.merchant_features(s, cut) == first
    s.absorb_tx(T0 + 3600, 100)  # before it: recomputed
    assert mf(s, cut, "m_count_7d") == 2
    label(s, 1, T0, cut - 1)
    assert mf(s, cut, "m_frauds_30d") == 1
    assert cf(s, cut, "c_frauds_30d") == 1  # the card view of the same state is not mixed up
    assert mf(s, cut, "m_frauds_30d") == 1


def test_unusable_times_are_refused() -> None:
    s = EntityState()
    with pytest.raises(ValueError, match="transaction time"):
        s.absorb_tx(math.nan, 1)
    with pytest.raises(ValueError, match="reported_at"):
        s.absorb_label("x", T0, 1, math.inf, True)
    assert s == EntityState()


# --- order independence (the aggregator sees events in any order) ------------------------------

_event = st.one_of(
    st.tuples(st.just("tx"), st.floats(0, 45 * DAY), st.integers(1, 10**6)),
    st.tuples(
        st.just("label"),
        st.integers(0, 25),  # few ids: repeats and reversals are common
        st.floats(0, 20 * DAY),
        st.booleans(),
    ),
)


def _apply(events: list[tuple], step: float = 1.7 * DAY) -> EntityState:
    s = EntityState()
    for ev in events:
        if ev[0] == "tx":
            s.absorb_tx(T0 + ev[1], ev[2])
        else:
            _, i, delay, fraud = ev
            # The same transaction always has the same time and amount (as from the join).
            tx_ts = T0 + (i * step) % (45 * DAY)
            s.absorb_label(f"t{i}", tx_ts, 100 * i, tx_ts + delay, fraud)
    return s


@settings(max_examples=150, deadline=None)
@given(st.lists(_event, max_size=60), st.randoms(use_true_random=False))
def test_absorption_is_commutative(events: list[tuple], rnd: random.Random) -> None:
    shuffled = events[:]
    rnd.shuffle(shuffled)
    a, b = _apply(events), _apply(shuffled)
    assert a == b
    assert a.to_bytes() == b.to_bytes()
    # And label absorption is idempotent: every label event twice gives the same state.
    twice = [e for e in events if e[0] == "label"]
    assert _apply(events + twice) == a


@pytest.mark.parametrize("seed", range(12))
def test_commutative_under_the_label_cap(seed: int) -> None:
    rnd = random.Random(seed)
    events: list[tuple] = []
    for i in range(en.LABEL_CAP + 60):
        events.append(("label", i, rnd.uniform(0, 5 * DAY), rnd.random() < 0.3))
    events += [("label", i, 6 * DAY, False) for i in range(0, en.LABEL_CAP + 60, 7)]
    shuffled = events[:]
    rnd.shuffle(shuffled)
    a, b = _apply(events, 0.02 * DAY), _apply(shuffled, 0.02 * DAY)
    assert len(a.labels) == en.LABEL_CAP
    assert a == b
