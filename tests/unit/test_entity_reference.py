"""Entity features (``EntityState.counts``, the labels in force, frauds and genuine counts)
against plain scans written here, over weeks of simulated traffic with late, out-of-order and
reversed labels: every feature row's entity part, counts at cutoffs behind and ahead of the
state, and the final states' buckets and bytes."""

from __future__ import annotations

import math
import random
from collections import defaultdict

from fraudstream.core import entity as en
from fraudstream.core import features as fx
from fraudstream.core.entity import EntityState
from fraudstream.core.messages import Transaction
from fraudstream.core.replay import Entities, LabelEvent, Timeline
from fraudstream.sim.generator import SimConfig, feedback_schedule, generate

DAY = 86400.0


def ref_counts(s: EntityState, cut: float) -> tuple[int, int, int, int, int]:
    """Every bucket scanned: the windows as the docstrings define them."""
    ch, cd = math.floor(cut / 3600), math.floor(cut / DAY)
    hours = [(h, b) for h, b in s.hourly.items() if ch - 24 <= h < ch]
    today = [b for h, b in hours if h >= cd * 24]
    days = [(d, b) for d, b in s.daily.items() if cd - 30 <= d < cd]
    n_today = sum(b[0] for b in today)
    return (
        sum(b[0] for _, b in hours),
        n_today + sum(b[0] for d, b in days if d >= cd - 7),
        n_today + sum(b[0] for _, b in days),
        sum(b[1] for b in today) + sum(b[1] for _, b in days),
        n_today,
    )


def ref_in_force(s: EntityState, cut: float) -> dict[str, tuple[float, float, bool]]:
    """Every label scanned: tx id -> (tx time, reported at, is fraud) of the report in force."""
    out = {}
    for tx_id, lab in s.labels.items():
        known = [r for r in lab.reports if r[0] < cut]
        if known:
            at, fraud = max(known)  # the latest; on a tie, fraud (True > False)
            out[tx_id] = (lab.tx_ts, at, fraud)
    return out


def ref_merchant(s: EntityState | None, cut: float) -> tuple[float, ...]:
    if s is None:
        return en.merchant_features(None, cut)
    c1, c7, c30, s30, _ = ref_counts(s, cut)
    lab = ref_in_force(s, cut)
    frauds = [(ts, at) for ts, at, f in lab.values() if f and cut - 30 * DAY <= ts < cut]
    f30 = len(frauds)
    f7 = sum(ts >= cut - 7 * DAY for ts, _ in frauds)
    r1 = sum(at >= cut - DAY for _, at in frauds)
    r7 = sum(at >= cut - 7 * DAY for _, at in frauds)
    if not frauds:
        tail = (-1.0, -1.0, -1.0, -1.0)
    else:
        newest, oldest = max(ts for ts, _ in frauds), min(ts for ts, _ in frauds)
        genuine = [ts for ts, _, f in lab.values() if not f and oldest <= ts < cut]
        tail = (
            (cut - newest) / DAY,
            (newest - oldest) / DAY,
            float(sum(ts > newest for ts in genuine)),
            f30 / (f30 + len(genuine)),
        )
    return (
        float(c1),
        float(c7),
        float(c30),
        s30 / 100.0 / c30 if c30 else -1.0,
        float(f7),
        float(f30),
        f30 / c30 if c30 else 0.0,
        float(r1),
        float(r7),
        *tail,
    )


def ref_card(s: EntityState | None, cut: float) -> tuple[float, ...]:
    if s is None:
        return en.card_label_features(None, cut)
    lab = ref_in_force(s, cut)
    frauds = [(ts, at) for ts, at, f in lab.values() if f and cut - 30 * DAY <= ts < cut]
    if not frauds:
        return (0.0, 0.0, -1.0)
    r7 = sum(at >= cut - 7 * DAY for _, at in frauds)
    return (float(len(frauds)), float(r7), (cut - max(ts for ts, _ in frauds)) / DAY)


def history(seed: int) -> tuple[list[Transaction], list[LabelEvent]]:
    """Five weeks of a small world (merchants hold every daily bucket and are pruned daily),
    labels late and out of order, many reversed, a few reversed fraud → genuine by hand."""
    events = list(generate(SimConfig(seed=seed, n_cards=40, n_merchants=20), days=36.0))
    sched = feedback_schedule(
        events, delay_s=2 * DAY, reversal_share=0.2, legit_label_share=0.3, seed=seed
    )
    labels = [LabelEvent(fb.transaction_id, due, fb.is_fraud) for due, fb in sched]
    rnd = random.Random(seed)
    frauds = [e.tx for e in events if e.is_fraud]
    for tx in rnd.sample(frauds, min(10, len(frauds))):
        at = tx.ts + rnd.uniform(0.5, 5) * DAY
        labels += [LabelEvent(tx.transaction_id, at, True)]
        labels += [LabelEvent(tx.transaction_id, at + rnd.uniform(0.1, 3) * DAY, False)]
    return [e.tx for e in events], labels


def test_entity_features_match_plain_scans_over_weeks_of_labelled_traffic() -> None:
    txs, labels = history(seed=21)
    tl = Timeline.build(txs, labels)
    assert len(tl.txs) > 2000
    assert sum(not f for _, _, f in tl.labels) > 50  # genuine labels, reversals among them
    ents = Entities()
    cards: dict[str, fx.CardState] = {}
    fast_path = busy = 0
    for group in tl.groups(ents):
        for tx in group:
            cards[tx.card_id], row = fx.step(cards.get(tx.card_id), tx, ents.get)
            cut = en.cutoff(tx.ts)
            m_state = ents.get(en.merchant_key(tx.merchant_id))
            m = ref_merchant(m_state, cut)
            ratio = tx.amount / m[3] if m[3] > 0.0 else -1.0
            expected = [*m, ratio, *ref_card(ents.get(en.card_key(tx.card_id)), cut)]
            assert row[fx.ENTITY_FEATURE_SLICE] == expected, tx.transaction_id
            if m_state is not None:
                fast_path += len(m_state.daily) > 10  # counts() sums totals
                busy += len(m_state.hourly) > 24  # counts() looks up the 24 hours that count
                # Queries behind and ahead of the state: the same sums as a scan.
                for back in (-3 * DAY, -DAY, 3600.0, DAY, 3 * DAY, 8 * DAY, 29 * DAY, 40 * DAY):
                    assert m_state.counts(cut - back) == ref_counts(m_state, cut - back)
    assert fast_path > 1000  # the totals path did most of the work
    assert busy > 200, busy  # the hourly lookups (8 cutoffs each) were compared with the scan too

    # Final states: buckets are every absorbed transaction of an hour / day at or after the
    # horizons of the newest day (which labels move too); the bytes follow from them.
    hours: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    days: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    newest: dict[str, float] = defaultdict(lambda: -math.inf)
    by_id = {t.transaction_id: t for t in tl.txs}
    for tx in tl.txs:
        key = en.merchant_key(tx.merchant_id)
        for table, k in ((hours, int(tx.ts // 3600)), (days, int(tx.ts // DAY))):
            table[key][k][0] += 1
            table[key][k][1] += fx.cents_of(tx.amount)
        newest[key] = max(newest[key], tx.ts)
    for _, tx_id, _ in tl.labels:
        key = en.merchant_key(by_id[tx_id].merchant_id)
        newest[key] = max(newest[key], by_id[tx_id].ts)
    for key, state in ents.states.items():
        if not key.startswith("m:"):
            continue
        day = int(newest[key] // DAY)
        h0, d0 = day * 24 - en.HOURLY_KEEP_H, day - en.DAILY_KEEP_D
        ref_h = {h: v for h, v in hours[key].items() if h >= h0}
        ref_d = {d: v for d, v in days[key].items() if d >= d0}
        assert state.hourly == ref_h
        assert state.daily == ref_d
        ref = EntityState(state.newest, ref_h, ref_d, state.labels)
        assert state.to_bytes() == ref.to_bytes()
        back = EntityState.from_bytes(state.to_bytes())  # derived totals rebuilt from scratch
        for cut in (en.cutoff(newest[key]) - k * DAY for k in range(-1, 35, 2)):
            assert back.counts(cut) == state.counts(cut) == ref_counts(state, cut)
            assert en.merchant_features(back, cut) == ref_merchant(state, cut)
