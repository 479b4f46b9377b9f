"""Offline/online parity: the training path (the offline replay) and the worker path produce
bit-identical feature vectors — with the card state written to bytes and read back between every
event (as the changelog-backed table does) and the entity state folded by an aggregator that sees
events in another order and is ahead of the cutoff, read back from bytes (as the follower of the
compacted entity-state topic will)."""

from __future__ import annotations

import random

import numpy as np

from fraudstream.core import entity as en
from fraudstream.core import features as fx
from fraudstream.core.entity import EntityState
from fraudstream.core.messages import Transaction
from fraudstream.core.replay import LabelEvent, replay
from fraudstream.sim.generator import SimConfig, feedback_schedule, generate


def _history() -> tuple[list[Transaction], list[LabelEvent]]:
    cfg = SimConfig(seed=21, n_cards=150, n_merchants=100, fraud_rate=0.02)
    events = list(generate(cfg, days=6))
    labels = [
        LabelEvent(fb.transaction_id, due, fb.is_fraud)
        for due, fb in feedback_schedule(events, delay_s=86400.0, seed=3)
    ]
    return [e.tx for e in events], labels


def test_replay_equals_worker_path_with_serialised_state() -> None:
    txs, labels = _history()
    X_train, ids = replay(txs, labels)
    assert X_train[:, fx.FEATURE_NAMES.index("m_frauds_30d")].max() > 0  # labels did count

    # The aggregator: events (transactions at their time, labels at their arrival) folded in
    # shuffled chunks, each entity stored as bytes; the worker reads what it holds.
    by_id = {t.transaction_id: t for t in txs}
    timeline: list[tuple[float, int, object]] = [(t.ts, 1, t) for t in txs]
    timeline += [(lab.reported_at, 0, lab) for lab in labels]
    timeline.sort(key=lambda e: (e[0], e[1]))
    stored: dict[str, bytes] = {}

    def fold(events: list[object]) -> None:
        for ev in events:
            if isinstance(ev, Transaction):
                items = [(en.merchant_key(ev.merchant_id), ("tx", ev))]
            else:
                assert isinstance(ev, LabelEvent)
                t = by_id[ev.transaction_id]
                items = [
                    (en.merchant_key(t.merchant_id), ("lab", ev)),
                    (en.card_key(t.card_id), ("lab", ev)),
                ]
            for key, (what, item) in items:
                raw = stored.get(key)
                st = EntityState() if raw is None else EntityState.from_bytes(raw)
                if what == "tx":
                    assert isinstance(item, Transaction)
                    st.absorb_tx(item.ts, fx.cents_of(item.amount))
                else:
                    assert isinstance(item, LabelEvent)
                    t = by_id[item.transaction_id]
                    st.absorb_label(
                        t.transaction_id,
                        t.ts,
                        fx.cents_of(t.amount),
                        item.reported_at,
                        item.is_fraud,
                    )
                stored[key] = st.to_bytes()

    def lookup(key: str) -> EntityState | None:
        raw = stored.get(key)
        return None if raw is None else EntityState.from_bytes(raw)

    rng = random.Random(5)
    table: dict[str, bytes] = {}
    rows: dict[str, list[float]] = {}
    pending: list[object] = []
    i = 0
    for tx in sorted(txs, key=lambda t: (t.ts, t.transaction_id)):
        # Everything before this transaction has reached the aggregator, in some order; being
        # ahead of the cutoff by up to 65 minutes changes nothing.
        while i < len(timeline) and timeline[i][0] < tx.ts:
            pending.append(timeline[i][2])
            i += 1
        if pending and (rng.random() < 0.3 or len(pending) > 40):
            rng.shuffle(pending)
            fold(pending)
            pending = []
        if pending:  # the watermark rule: fold what precedes the cutoff before scoring
            cut = en.cutoff(tx.ts)
            due = [e for e in pending if _time(e) < cut]
            pending = [e for e in pending if _time(e) >= cut]
            fold(due)
        raw = table.get(tx.card_id)
        state = None if raw is None else fx.state_from_json(raw)
        state, row = fx.step(state, tx, lookup)
        table[tx.card_id] = fx.state_to_json(state)
        rows[tx.transaction_id] = row
    X_online = np.asarray([rows[i] for i in ids], dtype=np.float64)

    assert X_train.shape == X_online.shape == (len(txs), fx.N_FEATURES)
    assert np.array_equal(X_train, X_online)
    assert np.array_equal(X_train.astype(np.float32), X_online.astype(np.float32))


def _time(ev: object) -> float:
    return ev.ts if isinstance(ev, Transaction) else ev.reported_at  # type: ignore[attr-defined]


def test_per_card_order_is_all_that_matters_for_card_features() -> None:
    # Partitioning by card keeps each card's order but interleaves cards arbitrarily: card
    # features must not depend on the interleaving.
    txs, _ = _history()
    events = sorted(txs, key=lambda t: (t.ts, t.transaction_id))
    X_ref, ids = replay(events, with_entities=False)
    by_card: dict[str, list[Transaction]] = {}
    for t in events:
        by_card.setdefault(t.card_id, []).append(t)
    states: dict[str, fx.CardState] = {}
    rows: dict[str, list[float]] = {}
    for card in sorted(by_card, reverse=True):  # card after card, not by time
        for t in by_card[card]:
            states[card], rows[t.transaction_id] = fx.step(states.get(card), t, en.nothing_known)
    assert np.array_equal(X_ref, np.asarray([rows[i] for i in ids]))


def test_step_many_equals_replay() -> None:
    txs, _ = _history()
    events = sorted(txs, key=lambda t: (t.ts, t.transaction_id))
    X_ref, _ = replay(events, with_entities=False)
    states: dict[str, fx.CardState] = {}
    parts = [
        fx.step_many(states, events[i : i + 97], en.nothing_known)
        for i in range(0, len(events), 97)
    ]
    assert np.array_equal(X_ref, np.vstack(parts))
