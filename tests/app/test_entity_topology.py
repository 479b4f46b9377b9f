"""The entity topology's worker parts without a broker (docs/entity-state.md): the aggregator
under the coordinator (exactly once through aborts and a new owner), the scoring handler's
entity events, gate and watermarks, and the join's label events and watermarks."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fraudstream.app import entities, scoring
from fraudstream.app.aggregate import AggregateHandler
from fraudstream.app.entities import EntityFollower
from fraudstream.app.partitioning import home
from fraudstream.app.scoring import ScoringHandler
from fraudstream.app.serving import ServingManager
from fraudstream.core import entity, entitylog
from fraudstream.core.entity import EntityState
from fraudstream.core.messages import (
    Decision,
    Feedback,
    decode_transaction,
    encode_decision,
    encode_feedback,
)
from fraudstream.settings import Settings
from tests.app.conftest import CHAMPION, tx_bytes
from tests.app.test_join import Rig
from tests.fakes import FakeWriters, make_coordinator, record

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
EVENTS = "fs-entity-events"


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=30))


def _ev(p: int, o: int, key: bytes, value: bytes) -> Any:
    return record(p, o, value, key, topic=EVENTS)


def test_the_aggregator_absorbs_each_event_once_through_an_abort_and_a_new_owner() -> None:
    async def body() -> None:
        writers = FakeWriters()
        c, _, _, _, clock, tasks = make_coordinator(AggregateHandler(), writers=writers)
        events = [
            _ev(0, i, b"m:shop", entitylog.encode_tx(T0 + 60 * i, 1000)) for i in range(5)
        ] + [_ev(0, 5, entitylog.WATERMARK_KEY, entitylog.encode_watermark("t:0", T0 + 300))]
        await c.handle(events[:3])
        writers.fail_commits = 1  # Kafka aborts the first commit: decided again, once
        clock.now += 1
        await c.commit_all()
        await c.handle(events[3:])
        clock.now += 1
        await c.commit_all()
        tasks.check()
        # A new owner restores the committed state from the state topic (the changelog).
        again = AggregateHandler()
        n = again.restore(0, writers.changelog[0])
        assert n == 1
        st = again.folds[0].get("m:shop")
        assert st is not None
        assert st.counts(T0 + 86400 * 2)[2] == 5  # five transactions in 30 days, none twice
        assert again.folds[0].marks == {"t:0": T0 + 300}
        # The map is written after the states of its commit.
        keys = [k for k, _ in writers.changelog[0]]
        assert keys[-1] == entitylog.WATERMARK_KEY
        assert writers.offsets[0] == 6

    run(body)


def test_a_bad_entity_event_is_dropped_not_fatal() -> None:
    h = AggregateHandler()
    h.restore(0, [])
    got = h.step([_ev(0, 0, b"m:x", b"{"), _ev(0, 1, b"m:x", entitylog.encode_tx(T0, 1))])
    assert got.results == [None, None]
    assert set(h.folds[0].pending) == {"m:x"}


def _scoring(settings: Settings, serving: ServingManager, wm: float) -> ScoringHandler:
    follower = EntityFollower(settings)
    follower.watermark = wm
    follower.partitions = 2
    return ScoringHandler(settings, serving, follower=follower, events_topic=EVENTS)


def test_scoring_writes_one_entity_event_per_decision_and_reads_merchant_state(
    settings: Settings, serving: ServingManager
) -> None:
    h = _scoring(settings, serving, math.inf)
    h.restore(0, [])
    shop = EntityState()
    for i in range(30):
        shop.absorb_tx(T0 - 86400 + 600 * i, 5000)
    assert h.follower is not None
    h.follower.raw["m:m-1"] = shop.to_bytes()
    recs = [
        record(0, i, tx_bytes(f"tx-{i}", "card-a", amount=10.0 + i), b"card-a") for i in range(3)
    ]
    recs.append(record(0, 3, b"not json", b"card-a"))
    done = h.step(recs)
    events = [s for s in done.sends if s.topic == EVENTS]
    assert [(s.key, entitylog.decode(s.key, s.value)) for s in events] == [
        (b"m:m-1", entitylog.TxEvent(T0, 1000 + 100 * i)) for i in range(3)
    ]
    assert all(s.partition == 0 and s.to_partition is None for s in events)
    # The merchant's state reached the features: the score differs from "nothing known".
    blind = ScoringHandler(settings, serving)
    blind.restore(0, [])
    other = blind.step(recs[:1]).results[0]
    first = done.results[0]
    assert isinstance(first, type(other))
    assert first.decision.score != other.decision.score  # type: ignore[union-attr]


def test_the_gate_parks_a_replay_and_reports_where_it_waits(
    settings: Settings, serving: ServingManager
) -> None:
    h = _scoring(settings, serving, T0 - 7200)
    rec = record(1, 0, tx_bytes("tx-1", "card-b"), b"card-b")
    assert not h.admit(rec)  # needs cutoff(T0) = T0 - 3600 > watermark
    sends = h.watermarks(1, idle=False, partitions=2)
    assert [(s.to_partition, entitylog.decode(s.key, s.value)) for s in sends] == [
        (q, entitylog.Watermark("t:1", T0)) for q in (0, 1)
    ]
    assert h.watermarks(1, idle=False, partitions=2) == []  # only when it moves
    assert h.follower is not None
    h.follower.watermark = entity.cutoff(T0)
    assert h.admit(rec)
    # An idle partition reports the clock.
    [first, _] = h.watermarks(0, idle=True, partitions=2)
    ev = entitylog.decode(first.key, first.value)
    assert isinstance(ev, entitylog.Watermark)
    assert ev.at == pytest.approx(time.time(), abs=5)
    # Undone watermarks are sent again.
    h.aborted(0)
    assert len(h.watermarks(0, idle=True, partitions=2)) == 2


def test_a_moved_transaction_is_counted_by_the_partition_that_moves_it(
    settings: Settings, serving: ServingManager
) -> None:
    # The moving partition's watermark covers the merchant event; the card's partition decides
    # the moved record later (its own watermark says nothing about it) and sends no second one.
    follower = EntityFollower(settings)
    follower.watermark = math.inf
    follower.partitions = 2
    card = next(c for c in (f"card-m{i}" for i in range(99)) if home(c.encode(), 2) == 1)
    h = ScoringHandler(settings, serving, lambda: 2, follower=follower, events_topic=EVENTS)
    h.restore(0, [])
    h.restore(1, [])
    raw = tx_bytes("tx-moved", card)
    moved = h.step([record(0, 0, raw, card.encode())])
    events = [s for s in moved.sends if s.topic == EVENTS]
    assert [(s.partition, entitylog.decode(s.key, s.value)) for s in events] == [
        (0, entitylog.TxEvent(T0, 4250))
    ]
    assert h.newest == {0: T0}
    side = record(1, 0, raw, card.encode(), topic=settings.topic_transactions_repartition)
    decided = h.step([side])
    assert [s.topic for s in decided.sends if s.topic == EVENTS] == []
    assert any(s.topic == settings.topic_decisions for s in decided.sends)
    assert h.newest == {0: T0}
    # A record the card's partition will refuse for its key is not counted anywhere.
    wrong = h.step([record(0, 1, tx_bytes("tx-w", card), b"another-card")])
    assert [s for s in wrong.sends if s.topic == EVENTS] == []


def test_moved_transactions_wait_for_the_watermark_their_mover_saw(
    settings: Settings, serving: ServingManager
) -> None:
    s = settings.model_copy(update={"entity_max_wait_s": 5.0})
    h = _scoring(s, serving, T0 - 7200)
    side = record(
        1, 0, tx_bytes("tx-1", "card-b"), b"card-b", topic=s.topic_transactions_repartition
    )

    async def body() -> None:
        waiting = asyncio.create_task(h.until_open([side]))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert h.follower is not None
        h.follower.watermark = entity.cutoff(T0)
        await asyncio.wait_for(waiting, 2)
        assert h.gate is not None
        assert h.gate.waiting_at(1) is None  # not parked as partition 1

    asyncio.run(body())


def _gave_up(settings: Settings, serving: ServingManager) -> ScoringHandler:
    """A handler whose partition 0 waited its longest wait (50 ms) for a watermark that never
    comes, and gave up."""
    h = _scoring(settings.model_copy(update={"entity_max_wait_s": 0.05}), serving, entitylog.NEVER)
    rec = record(0, 0, tx_bytes("tx-0", "card-b"), b"card-b")
    assert not h.admit(rec)
    time.sleep(0.06)
    assert h.admit(rec)
    return h


def test_the_gate_gives_up_after_the_longest_wait(
    settings: Settings, serving: ServingManager
) -> None:
    h = _gave_up(settings, serving)
    assert h.admit(record(0, 1, tx_bytes("tx-2", "card-b"), b"card-b"))  # open until caught up


def test_a_partition_that_gave_up_reads_a_transaction_s_time_only_now_and_then(
    settings: Settings, serving: ServingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = _gave_up(settings, serving)
    reads: list[bytes] = []

    def counted(raw: bytes, max_bytes: int) -> Any:
        reads.append(raw)
        return decode_transaction(raw, max_bytes)

    monkeypatch.setattr(scoring, "decode_transaction", counted)
    for i in range(1, 50):
        assert h.admit(record(0, i, tx_bytes(f"tx-{i}", "card-b"), b"card-b"))
    assert reads == []  # open, the time unread: no decode per record
    monkeypatch.setattr(entities, "RECHECK_S", 0.0)
    assert h.admit(record(0, 50, tx_bytes("tx-50", "card-b"), b"card-b"))
    assert len(reads) == 1  # looked again; the watermark has not caught up: still open
    # Another partition has not given up: it reads the time, and waits.
    assert not h.admit(record(1, 0, tx_bytes("tx-x", "card-x"), b"card-x"))
    assert len(reads) == 2
    # The watermark caught up with a transaction's time (not with the clock): read at the next
    # look, and the partition no longer counts as one that gave up.
    assert h.follower is not None
    tx = decode_transaction(tx_bytes("tx-51", "card-b"), 1 << 20)
    h.follower.watermark = entitylog.required(tx.ts, time.time())
    assert h.admit(record(0, 51, tx_bytes("tx-51", "card-b"), b"card-b"))
    assert len(reads) == 3
    h.follower.watermark = entitylog.NEVER
    monkeypatch.setattr(entities, "RECHECK_S", 60.0)
    assert not h.admit(record(0, 52, tx_bytes("tx-52", "card-b"), b"card-b"))  # waits again


def _decision(tid: str) -> bytes:
    return encode_decision(
        Decision(
            transaction_id=tid,
            card_id="card-z",
            decision="approve",
            score=0.01,
            model_version=CHAMPION,
            variant="champion",
            reasons=(),
            decided_at="2024-05-01T12:00:01.000+00:00",
            amount=12.34,
            currency="EUR",
            merchant_id="shop-z",
            event_time="2024-05-01T12:00:00+00:00",
        )
    )


def _label(tid: str, is_fraud: bool, at: str) -> bytes:
    return encode_feedback(Feedback(tid, is_fraud, "chargeback", at))


def test_the_join_sends_label_events_for_every_report_even_those_held(settings: Settings) -> None:
    async def body() -> None:
        r = Rig(settings)
        r.join.events_topic = EVENTS
        tid = "tx-held"
        # Two reports before the decision (a reversal): both become label events.
        await r.deliver(
            settings.topic_feedback,
            _label(tid, False, "2024-05-02T10:00:00+00:00"),
            tid.encode(),
        )
        await r.deliver(
            settings.topic_feedback, _label(tid, True, "2024-05-03T10:00:00+00:00"), tid.encode()
        )
        assert r.out.on(EVENTS) == []
        # The held labels hold the feedback watermark back.
        r.join.watermarks(set(), 2)
        marks = [entitylog.decode(x.key, x.value) for x in r.out.on(EVENTS)]
        assert {m.at for m in marks if isinstance(m, entitylog.Watermark)} == {
            1714644000.0  # 2024-05-02T10:00Z: the oldest held report
        }
        r.out.records.clear()
        await r.deliver(settings.topic_decisions, _decision(tid), tid.encode())
        got = [(x.key, entitylog.decode(x.key, x.value)) for x in r.out.on(EVENTS)]
        reports = sorted(
            (k, e.reported_at, e.is_fraud) for k, e in got if isinstance(e, entitylog.LabelEvent)
        )
        assert reports == sorted(
            (k, at, f)
            for k in (b"m:shop-z", b"c:card-z")
            for at, f in ((1714644000.0, False), (1714730400.0, True))
        )
        assert all(
            e.tx_ts == T0 and e.cents == 1234 for _, e in got if isinstance(e, entitylog.LabelEvent)
        )
        # A label after the decision: events at once, and the watermark moves to it.
        r.out.records.clear()
        await r.deliver(
            settings.topic_feedback,
            _label(tid, False, "2024-05-04T10:00:00+00:00"),
            tid.encode(),
        )
        assert len(r.out.on(EVENTS)) == 2
        r.join.watermarks(set(), 2)
        marks = [entitylog.decode(x.key, x.value) for x in r.out.on(EVENTS)[2:]]
        assert [m.at for m in marks if isinstance(m, entitylog.Watermark)] == [1714816800.0] * 2
        assert [x.partition for x in r.out.on(EVENTS)[2:]] == [0, 1]

    run(body)


def test_labels_read_before_their_decisions_move_the_watermark_once_applied(
    settings: Settings,
) -> None:
    # A replay: every label read long before its decision. Once the decisions come, the
    # watermark moves to the newest label read, not only to the newest applied on arrival.
    async def body() -> None:
        r = Rig(settings)
        r.join.events_topic = EVENTS
        days = ("2024-05-02", "2024-05-03", "2024-05-04")
        tids = [f"tx-r{i}" for i in range(30)]
        mine = [t for t in tids if home(t.encode(), 2) == 0][:3]
        for tid, day in zip(mine, days, strict=True):
            await r.deliver(
                settings.topic_feedback, _label(tid, False, f"{day}T10:00:00+00:00"), tid.encode()
            )
        for tid in mine:
            await r.deliver(settings.topic_decisions, _decision(tid), tid.encode())
        r.out.records.clear()
        r.join.watermarks(set(), 2)
        marks = [entitylog.decode(x.key, x.value) for x in r.out.on(EVENTS)]
        assert [m.at for m in marks if isinstance(m, entitylog.Watermark)] == [1714816800.0] * 2

    run(body)


def test_a_gate_without_a_longest_wait_never_parks(
    settings: Settings, serving: ServingManager
) -> None:
    """FRAUD_ENTITY_MAX_WAIT_S=0 (the demo's replay-speed simulator): scored at once."""
    h = _scoring(settings.model_copy(update={"entity_max_wait_s": 0.0}), serving, entitylog.NEVER)
    assert h.admit(record(0, 0, tx_bytes("tx-1", "card-b"), b"card-b"))
    assert h.gate is not None
    assert h.gate.parked == {}
