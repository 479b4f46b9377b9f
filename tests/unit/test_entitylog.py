"""Entity events through Kafka, pure (core/entitylog.py): encoding, the aggregator's fold
(pending vs committed, order independence, idempotent labels), the combined watermark and the
gate's requirement."""

from __future__ import annotations

import math
import random

import pytest

from fraudstream.core import entity, entitylog
from fraudstream.core.entity import EntityState
from fraudstream.errors import InvalidMessage

T0 = 1_780_000_000.0


def test_events_round_trip() -> None:
    assert entitylog.decode(b"m:x", entitylog.encode_tx(T0, 1234)) == entitylog.TxEvent(T0, 1234)
    raw = entitylog.encode_label("tx-1", T0, 500, T0 + 86400, True)
    assert entitylog.decode(b"c:k", raw) == entitylog.LabelEvent("tx-1", T0, 500, T0 + 86400, True)
    raw = entitylog.encode_watermark("t:3", T0)
    assert entitylog.decode(entitylog.WATERMARK_KEY, raw) == entitylog.Watermark("t:3", T0)
    with pytest.raises(InvalidMessage):
        entitylog.decode(b"m:x", b"not json")
    with pytest.raises(InvalidMessage):
        entitylog.decode(b"m:x", b'{"c": 1}')


def test_a_label_reported_before_its_transaction_counts_from_the_transaction() -> None:
    # As the offline timeline does (core.replay.Timeline.build).
    raw = entitylog.encode_label("tx-1", T0, 500, T0 - 10.0, False)
    ev = entitylog.decode(b"m:x", raw)
    assert isinstance(ev, entitylog.LabelEvent)
    assert ev.reported_at == T0


def test_label_events_name_the_merchant_and_the_card() -> None:
    got = entitylog.label_events(
        transaction_id="tx-1",
        merchant_id="m-1",
        card_id="c-1",
        tx_ts=T0,
        cents=100,
        reported_at=T0 + 1,
        is_fraud=True,
    )
    assert [k for k, _ in got] == [b"m:m-1", b"c:c-1"]


def _events(seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(300):
        key = f"m:{rng.randrange(5)}".encode()
        if rng.random() < 0.7:
            out.append(
                (key, entitylog.encode_tx(T0 + rng.uniform(0, 5 * 86400), rng.randrange(9999)))
            )
        else:
            ts = T0 + rng.uniform(0, 3 * 86400)
            at = ts + rng.uniform(0, 2 * 86400)
            out.append(
                (key, entitylog.encode_label(f"tx-{i % 40}", ts, 100, at, rng.random() < 0.5))
            )
    return out


def _fold(events: list[tuple[bytes, bytes]], commit_every: int) -> entitylog.Fold:
    fold = entitylog.Fold()
    for i, (k, v) in enumerate(events):
        fold.absorb(k, entitylog.decode(k, v))
        if i % commit_every == 0:
            fold.committed()
    fold.committed()
    return fold


def test_the_fold_is_order_independent_and_labels_idempotent() -> None:
    events = _events(1)
    a = _fold(events, 7)
    shuffled = list(events)
    random.Random(2).shuffle(shuffled)
    labels_twice = shuffled + [e for e in events if b'"l"' in e[1]]
    b = _fold(labels_twice, 13)
    assert set(a.states) == set(b.states)
    for key, raw in a.states.items():
        st, other = EntityState.from_bytes(raw), EntityState.from_bytes(b.states[key])
        for cut in (T0 + 86400.0, T0 + 4 * 86400.0, T0 + 6 * 86400.0):
            assert entity.merchant_features(st, cut) == entity.merchant_features(other, cut), key


def test_an_aborted_transaction_leaves_the_committed_states_as_they_were() -> None:
    fold = entitylog.Fold()
    fold.absorb(b"m:a", entitylog.TxEvent(T0, 100))
    fold.absorb(entitylog.WATERMARK_KEY, entitylog.Watermark("t:0", T0))
    changes = fold.changes()
    assert [k for k, _ in changes] == [b"m:a", entitylog.WATERMARK_KEY]  # the map comes last
    fold.committed()
    before = fold.states["m:a"]
    fold.absorb(b"m:a", entitylog.TxEvent(T0 + 10, 100))
    fold.absorb(entitylog.WATERMARK_KEY, entitylog.Watermark("t:0", T0 + 10))
    assert fold.get("m:a") is fold.pending["m:a"]  # the open transaction works on a copy
    fold.aborted()
    assert fold.states["m:a"] == before
    assert fold.marks == {"t:0": T0}
    assert fold.changes() == []


def test_watermarks_only_move_forward_and_restore() -> None:
    fold = entitylog.Fold()
    fold.absorb(entitylog.WATERMARK_KEY, entitylog.Watermark("t:0", T0 + 50))
    fold.absorb(entitylog.WATERMARK_KEY, entitylog.Watermark("t:0", T0))
    fold.committed()
    assert fold.marks == {"t:0": T0 + 50}
    again = entitylog.Fold()
    for k, v in [
        (b"m:a", EntityState().to_bytes()),
        (entitylog.WATERMARK_KEY, entitylog.encode_marks(fold.marks)),
    ]:
        again.restore(k, v)
    assert again.marks == fold.marks
    assert set(again.states) == {"m:a"}
    again.restore(b"m:a", None)
    assert again.states == {}


def test_combined_watermark_is_the_minimum_over_partitions_and_sources() -> None:
    need = ["t:0", "t:1"]
    assert entitylog.combined({}, 2, need) == entitylog.NEVER
    marks = {0: {"t:0": 10.0, "t:1": 20.0}}
    assert entitylog.combined(marks, 2, need) == entitylog.NEVER  # partition 1 not heard from
    marks[1] = {"t:0": 12.0}
    assert entitylog.combined(marks, 2, need) == entitylog.NEVER  # t:1 missing in partition 1
    marks[1]["t:1"] = 8.0
    assert entitylog.combined(marks, 2, need) == 8.0
    marks[0]["f:0"] = 5.0  # a source that reported once counts from then on
    assert entitylog.combined(marks, 2, need) == entitylog.NEVER
    marks[1]["f:0"] = 6.0
    assert entitylog.combined(marks, 2, need) == 5.0


def test_the_gate_never_asks_for_a_cutoff_ahead_of_the_clock() -> None:
    now = T0
    assert entitylog.required(T0 - 7200, now) == entity.cutoff(T0 - 7200)
    assert entitylog.required(T0 + 86400, now) == entity.cutoff(now)
    assert entitylog.required(T0, now) <= T0 - entity.SLACK_S
    assert not math.isinf(entitylog.required(T0, now))
