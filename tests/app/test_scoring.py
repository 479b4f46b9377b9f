"""The scoring handler behind the coordinator, on in-memory transactions (tests/fakes.py) and
the shipped models: decisions, scores, dead letters, dedup, card state, aborts and new owners,
and the SIGKILL x3 duplicates (issue 18)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from fraudstream.app.scoring import ScoringHandler
from fraudstream.app.serving import ServingManager
from fraudstream.core import engine, features
from fraudstream.core.messages import Decision, decode_decision, decode_score, decode_transaction
from fraudstream.core.policy import ModelPolicy, Policy, Thresholds, decide_many
from fraudstream.core.records import NO_OFFSET, Record
from fraudstream.core.replay import replay
from fraudstream.core.routing import assign_many
from fraudstream.core.rules import ListRule, RuleSet, card_digest
from fraudstream.settings import Settings
from tests.app.conftest import CHALLENGER, CHAMPION, DROP, HAS_CHALLENGER, SALT, tx_bytes
from tests.fakes import FakeWriters, Sent, make_coordinator, record


class Rig:
    def __init__(self, settings: Settings, serving: ServingManager, writers: FakeWriters) -> None:
        self.s = settings
        self.serving = serving
        self.handler = ScoringHandler(settings, serving)
        self.c, self.writers, self.source, self.observer, self.clock, self.tasks = make_coordinator(
            self.handler, writers=writers, interval_s=10.0
        )
        self.offsets: dict[int, int] = {}

    def tx(self, tid: str, card: str, partition: int = 0, **kw: Any) -> Record:
        return self.raw(tx_bytes(tid, card, **kw), card.encode(), partition)

    def raw(self, value: bytes | None, key: bytes | None, partition: int = 0) -> Record:
        offset = self.offsets.get(partition, 0)
        self.offsets[partition] = offset + 1
        return record(partition, offset, value, key, timestamp=1.7e9)

    def sent(self, topic: str) -> list[Sent]:
        """Everything written to ``topic``: committed, then still open."""
        open_ = [s for sends in self.writers.open_sends.values() for s in sends]
        return [s for s in [*self.writers.visible, *open_] if s.topic == topic]

    def decisions(self) -> dict[str, Decision]:
        recs = self.sent(self.s.topic_decisions)
        by_id = {r.key.decode(): decode_decision(r.value) for r in recs if r.key and r.value}
        assert len(by_id) == len(recs), "two decisions for one transaction_id"
        return by_id

    async def card(self, card: str) -> engine.CardRecord | None:
        """The card's committed record (after committing what is open)."""
        await self.c.commit_all()
        store = self.handler.store
        found = [store.get(p, card) for p in store.partitions()]
        return next((rec for rec in found if rec is not None), None)


def run(
    settings: Settings,
    serving: ServingManager,
    body: Callable[[Rig], Coroutine[Any, Any, None]],
    writers: FakeWriters | None = None,
) -> None:
    async def main() -> None:
        rig = Rig(settings, serving, writers or FakeWriters())
        await body(rig)
        rig.tasks.check()

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- decisions --------------------------------------------------------------------------------


def test_valid_transactions_get_one_decision_and_one_score_per_version(
    settings: Settings, serving: ServingManager
) -> None:
    cards = [f"card-{i:03d}" for i in range(40)]
    if HAS_CHALLENGER:
        variants = dict(zip(cards, assign_many(cards, SALT, 0.5), strict=True))
        champs = [c for c in cards if variants[c] == "champion"][:3]
        chall = [c for c in cards if variants[c] == "challenger"][:3]
        cards = champs + chall
    else:
        variants = dict.fromkeys(cards, "champion")
        cards = cards[:6]
    payloads = [
        tx_bytes(f"tx-{i}", card, amount=10.0 + 37.0 * i, merchant=f"m-{i}")
        for i, card in enumerate(cards)
    ]

    async def body(r: Rig) -> None:
        before = counter("fraudstream_transactions_received_total")
        await r.c.handle([r.raw(p, c.encode()) for p, c in zip(payloads, cards, strict=True)])
        await r.c.commit_all()
        decisions = r.decisions()
        assert sorted(decisions) == sorted(f"tx-{i}" for i in range(len(cards)))
        assert r.sent(r.s.topic_dlq) == []
        assert counter("fraudstream_transactions_received_total") - before == len(cards)
        txs = [decode_transaction(p) for p in payloads]
        x, ids = replay(txs, with_entities=False)  # this handler has no entity state
        current = r.serving.current
        assert current is not None
        expected = {
            (tid, v): float(p)
            for v, served in current.models.items()
            for tid, p in zip(ids, served.model.predict(x), strict=True)
        }
        for i, card in enumerate(cards):
            d = decisions[f"tx-{i}"]
            assert (d.card_id, d.amount, d.currency, d.variant) == (
                card,
                10.0 + 37.0 * i,
                "EUR",
                variants[card],
            )
            assert d.model_version == (CHALLENGER if d.variant == "challenger" else CHAMPION)
            assert d.score == pytest.approx(expected[(d.transaction_id, d.model_version)], abs=1e-6)
            [kind] = decide_many(np.array([d.score]), current.models[d.model_version].thresholds)
            assert d.decision == kind
            scores = [
                decode_score(s.value)
                for s in r.sent(r.s.topic_scores)
                if s.key == d.transaction_id.encode()
            ]
            assert sorted(sc.model_version for sc in scores) == sorted(current.models)
            for sc in scores:
                assert sc.score == pytest.approx(expected[(d.transaction_id, sc.model_version)])
                assert sc.role == (d.variant if sc.model_version == d.model_version else "shadow")
            rec = await r.card(card)
            assert rec is not None
            assert rec.state is not None
            assert (list(rec.seen), rec.state.n) == ([d.transaction_id], 1)

    run(settings, serving, body)


BAD: list[tuple[str, bytes | None, bytes, str, str]] = [
    # (case, key, value, error.class, a fragment of error.message)
    ("not_json", b"card-x", b'{"transaction_id": "tx-bad", ', "not_json", "not JSON"),
    ("not_utf8", b"card-x", b'{"transaction_id": "\xff\xfe"}', "not_utf8", "UTF-8"),
    ("empty", b"card-x", b"", "empty", "empty transaction"),
    (
        "missing_field",
        b"card-x",
        tx_bytes("tx-bad", "card-x", merchant_id=DROP),
        "schema",
        "merchant_id",
    ),
    ("negative_amount", b"card-x", tx_bytes("tx-bad", "card-x", amount=-5), "schema", "amount"),
    (
        "bad_currency",
        b"card-x",
        tx_bytes("tx-bad", "card-x", currency="EURO"),
        "bad_currency",
        "currency",
    ),
    (
        "bad_timestamp",
        b"card-x",
        tx_bytes("tx-bad", "card-x", when="2024-02-30T12:00:00+00:00"),
        "bad_timestamp",
        "event_time",
    ),
    ("key_mismatch", b"card-y", tx_bytes("tx-bad", "card-x"), "key_mismatch", "card_id"),
    ("no_key", None, tx_bytes("tx-bad", "card-x"), "key_mismatch", "card_id"),
    (
        "non_finite",
        b"card-x",
        tx_bytes("tx-bad", "card-x", when="9999-12-31T23:00:00+00:00"),
        "non_finite_feature",
        "NaN or infinite",
    ),
]


@pytest.mark.parametrize(
    ("key", "value", "reason", "fragment"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input_goes_to_the_dlq_and_the_next_record_is_decided(
    settings: Settings,
    serving: ServingManager,
    key: bytes | None,
    value: bytes,
    reason: str,
    fragment: str,
) -> None:
    async def body(r: Rig) -> None:
        before = counter("fraudstream_dead_letters_total", reason=reason, source="transactions")
        bad = r.raw(value, key, partition=1)
        await r.c.handle([bad, r.tx("tx-good", "card-ok", partition=1)])
        [dl] = r.sent(r.s.topic_dlq)
        assert (dl.key, dl.value) == (key, value)  # the original bytes, untouched
        assert dl.headers == {
            "error.class": reason,
            "error.message": dl.headers["error.message"],
            "origin.topic": r.s.topic_transactions,
            "origin.partition": "1",
            "origin.offset": "0",
        }
        assert fragment in dl.headers["error.message"]
        after = counter("fraudstream_dead_letters_total", reason=reason, source="transactions")
        assert after - before == 1
        assert list(r.decisions()) == ["tx-good"]
        assert await r.card("card-x") is None  # the bad record left no trace in card state
        assert r.writers.offsets == {1: 2}  # and the offset passed it: it is dealt with

    run(settings, serving, body)


def test_bad_records_inside_a_batch_do_not_sink_it(
    settings: Settings, serving: ServingManager
) -> None:
    async def body(r: Rig) -> None:
        batch = []
        for i, (_, key, value, _, _) in enumerate(BAD):
            batch += [r.raw(value, key), r.tx(f"tx-{i}", f"card-{i}")]
        await r.c.handle(batch)
        assert sorted(r.decisions()) == sorted(f"tx-{i}" for i in range(len(BAD)))
        dlq = r.sent(r.s.topic_dlq)
        assert [d.headers["error.class"] for d in dlq] == [case[3] for case in BAD]
        assert [d.headers["origin.offset"] for d in dlq] == [str(2 * i) for i in range(len(BAD))]

    run(settings, serving, body)


def test_a_repeated_transaction_id_gets_one_decision(
    settings: Settings, serving: ServingManager
) -> None:
    async def body(r: Rig) -> None:
        before = counter("fraudstream_duplicates_total")
        first = tx_bytes("tx-dup", "card-d", amount=80.0)
        await r.c.handle([r.raw(first, b"card-d"), r.raw(first, b"card-d")])  # one batch
        again = tx_bytes("tx-dup", "card-d", amount=999.0, when="2024-05-01T12:05:00+00:00")
        await r.c.handle([r.raw(again, b"card-d")])  # a later upstream retry, another body
        decisions = r.decisions()
        assert list(decisions) == ["tx-dup"]
        assert decisions["tx-dup"].amount == 80.0
        assert counter("fraudstream_duplicates_total") - before == 2
        rec = await r.card("card-d")
        assert rec is not None
        assert rec.state is not None
        assert (rec.state.n, list(rec.seen)) == (1, ["tx-dup"])

    run(settings, serving, body)


def test_policy_and_rules_applied_live_decide_the_next_batch_and_rule_hits_are_counted(
    settings: Settings, serving: ServingManager
) -> None:
    async def body(r: Rig) -> None:
        assert counter("fraudstream_rule_hits_total", rule="stolen") == 0.0
        await r.c.handle([r.tx("tx-a", "card-bad", amount=20.0)])
        assert r.decisions()["tx-a"].decision == "approve"
        r.serving.apply_rules(
            RuleSet(4, (ListRule("stolen", "card", frozenset({card_digest("card-bad")})),))
        )
        r.serving.apply_policy(Policy(9, {"*": ModelPolicy(default=Thresholds(0.0, 1.0))}))
        # Zero-initialised once the rule is in force, like the other counters.
        assert REGISTRY.get_sample_value("fraudstream_rule_hits_total", {"rule": "stolen"}) == 0
        assert counter("fraudstream_rules_version") == 4.0
        assert counter("fraudstream_policy_version") == 9.0
        await r.c.handle([r.tx("tx-b", "card-bad", amount=20.0), r.tx("tx-c", "card-ok")])
        decisions = r.decisions()
        blocked, other = decisions["tx-b"], decisions["tx-c"]
        assert (blocked.decision, blocked.policy_version, blocked.rules_version) == (
            "decline",
            9,
            4,
        )
        assert blocked.reason_codes[0].code == "RULE_BLOCK_CARD"
        assert blocked.reason_codes[0].ref == "stolen"
        assert (other.decision, other.policy_version, other.rules_version) == ("review", 9, 4)
        assert other.reason_codes
        assert counter("fraudstream_rule_hits_total", rule="stolen") == 1.0

    run(settings, serving, body)


@pytest.mark.parametrize("same_batch", [False, True], ids=["two_batches", "one_batch"])
def test_the_second_transaction_of_a_card_sees_the_first(
    settings: Settings, serving: ServingManager, same_batch: bool
) -> None:
    card = "card-state"
    first = tx_bytes("tx-a", card, amount=20.0, merchant="m-a")
    second = tx_bytes("tx-b", card, amount=900.0, merchant="m-b", when="2024-05-01T12:20:00+00:00")

    async def body(r: Rig) -> None:
        recs = [
            r.raw(first, card.encode()),
            r.tx("tx-o", "card-other"),
            r.raw(second, card.encode()),
        ]
        if same_batch:
            await r.c.handle(recs)
        else:
            for one in recs:
                await r.c.handle([one])
        decisions = r.decisions()
        x, ids = replay(
            [decode_transaction(first), decode_transaction(second)], with_entities=False
        )
        assert ids == ["tx-a", "tx-b"]
        row = features.row_as_dict(x[1])
        assert (row["card_count_1h"], row["secs_since_prev"], row["new_merchant"]) == (
            1.0,
            1200.0,
            1.0,
        )
        current = r.serving.current
        assert current is not None
        d = decisions["tx-b"]
        assert d.score == pytest.approx(float(current.models[d.model_version].model.predict(x)[1]))
        rec = await r.card(card)
        assert rec is not None
        assert rec.state is not None
        assert (rec.state.n, rec.state.sum_c, list(rec.seen)) == (2, 92_000, ["tx-a", "tx-b"])

    run(settings, serving, body)


# --- exactly once -------------------------------------------------------------------------------


def test_records_delivered_twice_are_decided_once_even_past_the_dedup_window(
    settings: Settings, serving: ServingManager
) -> None:
    """The SIGKILL x3 duplicates (issue 18). After a restart whose join tables had changelog
    records to restore, Faust's recovery resumes the stream partitions and its fetcher before
    it seeks them to the committed offsets: the first fetch arrives twice. The card's dedup
    record forgets ids more than FRAUD_DEDUP_WINDOW_HOURS (event time) behind the card's newest
    event, so it cannot be what stops the second copy: the partition's next offset does."""
    hours = [0, 1, 2, 30, 31]  # the card's events, hours after its first one

    def when(h: int) -> str:
        return f"2024-05-{1 + h // 24:02d}T{h % 24:02d}:00:00+00:00"

    async def body(r: Rig) -> None:
        batch = [
            record(0, o, tx_bytes(f"tx-{o}", "c-again", when=when(h)), b"c-again")
            for o, h in enumerate(hours)
        ]
        await r.c.handle(batch)
        await r.c.commit_all()
        again = [record(0, o, rec.value, rec.key) for o, rec in enumerate(batch)]
        await r.c.handle(again)
        await r.c.commit_all()
        committed = [s.key for s in r.writers.seen(r.s.topic_decisions)]
        assert sorted(committed) == sorted(f"tx-{o}".encode() for o in range(len(hours)))
        assert ("redelivered", (0, len(hours))) in r.observer.events
        # The dedup record alone would not have stopped them: it forgot the first three.
        rec = await r.card("c-again")
        assert rec is not None
        assert sorted(rec.seen) == ["tx-3", "tx-4"]

    run(settings, serving, body)


def test_an_aborted_transaction_is_decided_again_from_the_state_it_saw(
    settings: Settings, serving: ServingManager
) -> None:
    async def body(r: Rig) -> None:
        await r.c.handle([r.tx(f"tx-{i}", "card-ab", amount=10.0 * (i + 1)) for i in range(3)])
        r.writers.fail_commits = 1
        rec = await r.card("card-ab")
        assert r.observer.count("aborted") == 1
        committed = r.writers.seen(r.s.topic_decisions)
        assert sorted(s.key for s in committed) == [b"tx-0", b"tx-1", b"tx-2"]
        assert rec is not None
        assert rec.state is not None
        assert (rec.state.n, list(rec.seen)) == (3, ["tx-0", "tx-1", "tx-2"])
        assert r.writers.offsets == {0: 3}

    run(settings, serving, body)


def test_at_least_once_a_card_decided_while_its_partition_commits_sees_what_the_commit_carries(
    settings: Settings, serving: ServingManager
) -> None:
    """At least once the coordinator decides while a commit runs (issue 19): the card's record
    in that commit is read under the new pending one, and a repeat of a transaction it carries
    is a duplicate."""

    async def body(r: Rig) -> None:
        assert r.c.overlaps
        before = counter("fraudstream_duplicates_total")
        a = tx_bytes("tx-a", "card-o", amount=20.0)
        b = tx_bytes("tx-b", "card-o", amount=30.0, when="2024-05-01T12:10:00+00:00")
        await r.c.handle([r.raw(a, b"card-o")])
        r.writers.gate = asyncio.Event()
        r.clock.now += 20.0
        await r.c.commit_due()
        await asyncio.wait_for(r.writers.waiting.wait(), 5)
        await r.c.handle([r.raw(a, b"card-o"), r.raw(b, b"card-o")])  # while it commits
        assert counter("fraudstream_duplicates_total") - before == 1
        assert [s.key for s in r.writers.open_sends[0] if s.topic == r.s.topic_decisions] == [
            b"tx-b"
        ]
        r.writers.gate.set()
        rec = await r.card("card-o")
        assert rec is not None
        assert rec.state is not None
        assert (rec.state.n, list(rec.seen)) == (2, ["tx-a", "tx-b"])
        assert [s.key for s in r.writers.seen(r.s.topic_decisions)] == [b"tx-a", b"tx-b"]
        assert r.writers.offsets == {0: 3}
        assert [k for k, _ in r.writers.changelog[0]] == [b"card-o", b"card-o"]

    run(settings, serving, body, FakeWriters(shared=True, overlaps=True))


def test_a_new_owner_restores_committed_card_state_only(
    settings: Settings, serving: ServingManager
) -> None:
    writers = FakeWriters()
    a = tx_bytes("tx-a", "card-r", amount=50.0)
    b = tx_bytes("tx-b", "card-r", amount=70.0)

    async def first_owner(r: Rig) -> None:
        await r.c.handle([record(0, 0, a, b"card-r")])
        await r.c.commit_all()
        await r.c.handle([record(0, 1, b, b"card-r")])  # decided, never committed: it dies

    async def second_owner(r: Rig) -> None:
        assert r.c.position(0) is None
        await r.c.handle([record(0, 1, b, b"card-r")])  # from the committed offset
        rec = await r.card("card-r")
        assert [s.key for s in r.writers.seen(r.s.topic_decisions)] == [b"tx-a", b"tx-b"]
        assert rec is not None
        assert rec.state is not None
        assert (rec.state.n, list(rec.seen)) == (2, ["tx-a", "tx-b"])

    run(settings, serving, first_owner, writers)
    run(settings, serving, second_owner, writers)


# --- requests -----------------------------------------------------------------------------------


def test_a_request_is_decided_like_a_record_and_a_repeat_is_a_duplicate(
    settings: Settings, serving: ServingManager
) -> None:
    async def body(r: Rig) -> None:
        await r.c.on_assigned({1})
        await r.tasks.settle()
        r.clock.now += 100.0  # its transaction is due: the request waits for no interval
        raw = tx_bytes("tx-api", "card-api")
        got = await r.c.request(record(1, NO_OFFSET, raw, b"card-api"))
        assert isinstance(got, engine.Scored)
        assert [s.key for s in r.writers.seen(r.s.topic_decisions)] == [b"tx-api"]
        r.clock.now += 100.0
        again = await r.c.request(record(1, NO_OFFSET, raw, b"card-api"))
        assert isinstance(again, engine.Duplicate)
        assert r.writers.offsets == {}

    run(settings, serving, body)


def test_a_repeat_while_the_original_is_uncommitted_waits_and_gets_the_original_decision(
    settings: Settings, serving: ServingManager
) -> None:
    """Issue 21 item 5: a client retrying (a timeout) never decides twice and gets the decision
    that was written; the id reused for another transaction is told apart."""

    async def body(r: Rig) -> None:
        await r.c.on_assigned({1})
        await r.tasks.settle()
        r.writers.gate = asyncio.Event()  # commits wait: the original stays uncommitted
        r.clock.now += 100.0  # due: the first request's commit starts at once
        raw = tx_bytes("tx-retry", "card-retry")
        first = asyncio.ensure_future(r.c.request(record(1, NO_OFFSET, raw, b"card-retry")))
        await asyncio.wait_for(r.writers.waiting.wait(), 5)
        repeat = asyncio.ensure_future(r.c.request(record(1, NO_OFFSET, raw, b"card-retry")))
        await asyncio.sleep(0.05)
        assert not first.done()
        assert not repeat.done()  # waits for the original's commit
        r.clock.now += 100.0  # and its own commit is due once that one is done
        r.writers.gate.set()
        original, again = await asyncio.gather(first, repeat)
        assert isinstance(original, engine.Scored)
        assert isinstance(again, engine.Duplicate)
        assert again.same_body
        [written] = r.writers.seen(r.s.topic_decisions)
        assert again.original == written.value  # the decision written, byte for byte
        other = tx_bytes("tx-retry", "card-retry", amount=1234.5)
        r.clock.now += 100.0
        reused = await r.c.request(record(1, NO_OFFSET, other, b"card-retry"))
        assert isinstance(reused, engine.Duplicate)
        assert not reused.same_body
        assert len(r.writers.seen(r.s.topic_decisions)) == 1

    run(settings, serving, body)
