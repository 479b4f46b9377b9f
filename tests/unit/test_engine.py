"""The whole scoring step (``engine.step``): raw records in; a verdict per record and the changed
card records out, including decode, the key check and the per-record fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest

from fraudstream.core import engine, features
from fraudstream.core.entity import nothing_known
from fraudstream.core.messages import Routing, decode_transaction, encode_decision
from fraudstream.core.policy import (
    ModelPolicy,
    Policy,
    Segment,
    SegmentThresholds,
    Thresholds,
    top_reasons,
)
from fraudstream.core.records import NO_OFFSET, Record
from fraudstream.core.registry import ReasonsMethod, load
from fraudstream.core.rules import ListRule, RuleSet, VelocityRule, card_digest
from fraudstream.errors import ModelError

MODELS = Path(__file__).resolve().parents[2] / "models"


def serving() -> engine.Serving:
    model = load(MODELS, "champion-v1")
    served = engine.ServedModel("champion-v1", model, Thresholds(review=0.5, decline=0.9))
    return engine.Serving(Routing(champion="champion-v1", salt="s"), {"champion-v1": served})


def tx(tid: str, card: str, when: str = "2024-05-01T12:00:00+00:00") -> bytes:
    return orjson.dumps(
        {
            "transaction_id": tid,
            "card_id": card,
            "merchant_id": "m-1",
            "amount": 12.5,
            "currency": "EUR",
            "event_time": when,
            "mcc": 5411,
            "country": "FR",
            "channel": "ecom",
            "device_id": "d",
            "schema_version": 1,
        }
    )


def rec(p: int, o: int, value: bytes | None, key: bytes | None) -> Record:
    return Record("transactions", p, o, key, value, None)


def step(
    records: list[Record], cards: dict[tuple[int, str], engine.CardRecord] | None = None
) -> engine.Step:
    known = cards or {}
    return engine.step(
        serving(),
        records,
        lambda p, c: known.get((p, c)),
        max_bytes=1_000_000,
        now_iso="2024-05-01T12:00:00.000Z",
        dedup_window_s=86400.0,
    )


def test_every_record_gets_a_verdict_in_order_and_bad_ones_their_reason() -> None:
    got = step(
        [
            rec(0, 0, tx("t1", "c1"), b"c1"),
            rec(0, 1, b"{", b"c1"),
            rec(0, 2, tx("t2", "c1"), b"c2"),
            rec(0, 3, tx("t1", "c1"), b"c1"),
        ]
    )
    kinds = [type(v).__name__ for _, v in got.verdicts]
    assert kinds == ["Scored", "Refused", "Refused", "Duplicate"]
    assert [r.offset for r, _ in got.verdicts] == [0, 1, 2, 3]
    refused = [v for _, v in got.verdicts if isinstance(v, engine.Refused)]
    assert [v.reason for v in refused] == ["not_json", "key_mismatch"]
    assert list(got.cards) == [(0, "c1")]
    assert list(got.cards[(0, "c1")].seen) == ["t1"]
    assert not got.retried_singly


def test_the_card_records_looked_up_are_not_changed_and_unchanged_ones_not_returned() -> None:
    before = step([rec(0, 0, tx("t1", "c1"), b"c1")]).cards[(0, "c1")]
    known = {(0, "c1"): before}
    got = step([rec(0, 1, tx("t1", "c1"), b"c1")], known)  # a duplicate changes nothing
    assert got.cards == {}
    got = step([rec(0, 2, tx("t2", "c1", "2024-05-01T13:00:00+00:00"), b"c1")], known)
    assert list(got.cards[(0, "c1")].seen) == ["t1", "t2"]
    assert list(before.seen) == ["t1"]


def test_one_card_in_two_partitions_keeps_a_record_in_each() -> None:
    got = step([rec(0, 0, tx("t1", "c1"), b"c1"), rec(1, 0, tx("t2", "c1"), b"c1")])
    assert {slot: list(r.seen) for slot, r in got.cards.items()} == {
        (0, "c1"): ["t1"],
        (1, "c1"): ["t2"],
    }


class Flaky:
    """A model that fails for any batch holding the poisonous amount."""

    def __init__(self, inner: object, poison: float) -> None:
        self.inner, self.poison = inner, poison
        self.meta = inner.meta

    def predict(self, x: np.ndarray) -> np.ndarray:
        if (x == self.poison).any():
            raise RuntimeError("poisoned")
        return self.inner.predict(x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.inner.contributions(x)


def with_model(s: engine.Serving, model: object) -> engine.Serving:
    served = s.models["champion-v1"]
    return engine.Serving(
        s.routing, {"champion-v1": engine.ServedModel("champion-v1", model, served.thresholds)}
    )


def test_a_batch_that_fails_is_decided_one_record_at_a_time() -> None:
    s = serving()
    poisoned = orjson.loads(tx("t2", "c2"))
    poisoned["amount"] = 777.25  # exact in float32: the "amount" feature
    flaky = with_model(s, Flaky(s.models["champion-v1"].model, 777.25))
    records = [
        rec(0, 0, tx("t1", "c1"), b"c1"),
        rec(0, 1, orjson.dumps(poisoned), b"c2"),
        rec(0, 2, tx("t3", "c3"), b"c3"),
    ]
    got = engine.step(
        flaky,
        records,
        lambda p, c: None,
        max_bytes=1_000_000,
        now_iso="2024-05-01T12:00:00.000Z",
        dedup_window_s=86400.0,
    )
    assert got.retried_singly
    assert [type(v).__name__ for _, v in got.verdicts] == ["Scored", "Refused", "Scored"]
    verdict = got.verdicts[1][1]
    assert isinstance(verdict, engine.Refused)
    assert (verdict.reason, verdict.message) == ("scoring_error", "RuntimeError('poisoned')")
    # The refused transaction left no trace in its card's record.
    assert sorted(got.cards) == [(0, "c1"), (0, "c3")]


def test_a_fraudstream_error_is_not_bad_input() -> None:
    s = serving()

    class Broken:
        meta = s.models["champion-v1"].model.meta

        def predict(self, x: np.ndarray) -> np.ndarray:
            raise ModelError("model file changed under the worker")

    with pytest.raises(ModelError):
        engine.step(
            with_model(s, Broken()),
            [rec(0, 0, tx("t1", "c1"), b"c1")],
            lambda p, c: None,
            max_bytes=1_000_000,
            now_iso="x",
            dedup_window_s=1.0,
        )


def test_a_flagged_decision_carries_readable_reason_codes_beside_the_raw_contributions() -> None:
    low = engine.ServedModel(
        "champion-v1", load(MODELS, "champion-v1"), Thresholds(review=0.0, decline=1.0)
    )
    s = engine.Serving(Routing(champion="champion-v1", salt="s"), {"champion-v1": low})
    d = _decide_one(s, tx("t1", "c1"), "c1").decision
    assert d.decision == "review"
    assert d.reasons
    assert d.reason_codes
    assert all(c.source == "model" and c.text for c in d.reason_codes)
    assert {c.ref for c in d.reason_codes} <= {r.feature for r in d.reasons}
    assert (d.policy_version, d.rules_version) == (0, 0)


@pytest.mark.parametrize("method", ["path", "shap"])
def test_reasons_come_from_the_attribution_method_in_force(method: ReasonsMethod) -> None:
    model = load(MODELS, "challenger-v2")
    low = engine.ServedModel("challenger-v2", model, Thresholds(review=0.0, decline=1.0))
    routing = Routing(champion="challenger-v2", salt="s")
    s = engine.Serving(routing, {"challenger-v2": low}, reasons=method)
    body = tx("t1", "c1")
    d = _decide_one(s, body, "c1").decision
    _, row = features.step(None, decode_transaction(body), nothing_known)
    x = np.asarray([row], dtype=np.float32)
    names = model.meta.feature_names
    assert d.reasons == top_reasons(model.contributions(x, method)[0], names, x[0])
    other = "shap" if method == "path" else "path"
    assert d.reasons != top_reasons(model.contributions(x, other)[0], names, x[0])


def _decide_one(s: engine.Serving, body: bytes, card: str) -> engine.Scored:
    done = engine.step(
        s,
        [rec(0, 0, body, card.encode())],
        lambda p, c: None,
        max_bytes=1_000_000,
        now_iso="2024-05-01T12:00:00.000Z",
        dedup_window_s=86400.0,
    )
    verdict = done.verdicts[0][1]
    assert isinstance(verdict, engine.Scored)
    return verdict


def test_the_policy_in_force_decides_and_is_recorded() -> None:
    base = serving()
    before = _decide_one(base, tx("t1", "c1"), "c1").decision
    assert before.decision == "approve"
    everything = Policy(7, {"champion-v1": ModelPolicy(default=Thresholds(0.0, 0.0))})
    after = _decide_one(dataclasses.replace(base, policy=everything), tx("t1", "c1"), "c1")
    assert after.decision.decision == "decline"
    assert after.decision.policy_version == 7
    assert after.scores[0].decision == "decline"  # the model's own decision under the policy
    ecom_only = Policy(
        8,
        {
            "*": ModelPolicy(
                segments=(SegmentThresholds("pos", Segment(channel="pos"), Thresholds(0.0, 0.0)),)
            )
        },
    )
    untouched = _decide_one(dataclasses.replace(base, policy=ecom_only), tx("t1", "c1"), "c1")
    assert untouched.decision.decision == "approve"  # the transaction is ecom
    assert untouched.decision.policy_version == 8


def test_rules_take_priority_over_the_model_and_are_named() -> None:
    ruleset = RuleSet(
        5,
        (
            ListRule("stolen", "card", frozenset({card_digest("c-bad")})),
            ListRule("trusted", "merchant", frozenset({"m-1"}), "approve"),
        ),
    )
    s = dataclasses.replace(serving(), rules=ruleset)
    blocked = _decide_one(s, tx("t1", "c-bad"), "c-bad")
    d = blocked.decision
    assert d.decision == "decline"
    assert d.rules_version == 5
    assert [(c.code, c.source, c.ref) for c in d.reason_codes[:2]] == [
        ("RULE_BLOCK_CARD", "rule", "stolen"),
        ("RULE_ALLOW_MERCHANT", "rule", "trusted"),
    ]
    assert blocked.scores[0].decision == "approve"  # what the model alone said
    # An allow list overrides a model decline, and still shows the model's reasons.
    flagging = dataclasses.replace(
        s, policy=Policy(1, {"champion-v1": ModelPolicy(default=Thresholds(0.0, 0.0))})
    )
    allowed = _decide_one(flagging, tx("t2", "c-ok"), "c-ok").decision
    assert allowed.decision == "approve"
    assert allowed.reason_codes[0].ref == "trusted"
    assert any(c.source == "model" for c in allowed.reason_codes)


def test_a_velocity_rule_reads_the_cards_state_in_the_same_step() -> None:
    s = dataclasses.replace(
        serving(), rules=RuleSet(2, (VelocityRule("burst", "1h", max_count=2),))
    )
    bodies = [tx(f"t{i}", "c1", f"2024-05-01T12:0{i}:00+00:00") for i in range(4)]
    done = engine.step(
        s,
        [rec(0, i, b, b"c1") for i, b in enumerate(bodies)],
        lambda p, c: None,
        max_bytes=1_000_000,
        now_iso="2024-05-01T12:00:00.000Z",
        dedup_window_s=86400.0,
    )
    kinds = [v.decision.decision for _, v in done.verdicts if isinstance(v, engine.Scored)]
    assert kinds == ["approve", "approve", "decline", "decline"]


def request(p: int, value: bytes, key: bytes) -> Record:
    """A record of the synchronous API: not from the log."""
    return Record("transactions", p, NO_OFFSET, key, value, None)


def test_an_api_request_repeated_gets_its_original_decision_and_another_body_is_told() -> None:
    first = step([request(0, tx("t1", "c1"), b"c1")])
    [(_, scored)] = first.verdicts
    assert isinstance(scored, engine.Scored)
    card = first.cards[(0, "c1")]
    assert list(card.replies) == ["t1"]
    known = {(0, "c1"): card}
    # The same transaction, spelled differently (key order), and the id with another amount.
    same = orjson.dumps(dict(reversed(list(orjson.loads(tx("t1", "c1")).items()))))
    other = orjson.dumps({**orjson.loads(tx("t1", "c1")), "amount": 99.0})
    again = step([request(0, same, b"c1"), request(0, other, b"c1")], known)
    [(_, repeat), (_, reused)] = again.verdicts
    assert isinstance(repeat, engine.Duplicate)
    assert repeat.same_body
    assert repeat.original == encode_decision(scored.decision)
    assert isinstance(reused, engine.Duplicate)
    assert not reused.same_body
    assert again.cards == {}  # a repeat changes no card record
    # The stream's records keep no decision: a repeat of one is a plain duplicate.
    stream = step([rec(0, 0, tx("t2", "c2"), b"c2")])
    assert stream.cards[(0, "c2")].replies == {}
    [(_, dup)] = step([request(0, tx("t2", "c2"), b"c2")], dict(stream.cards)).verdicts
    assert isinstance(dup, engine.Duplicate)
    assert dup.original is None


def test_a_repeat_in_the_same_batch_finds_the_first_and_replies_survive_the_changelog() -> None:
    got = step([request(0, tx("t1", "c1"), b"c1"), request(0, tx("t1", "c1"), b"c1")])
    [(_, first), (_, repeat)] = got.verdicts
    assert isinstance(first, engine.Scored)
    assert isinstance(repeat, engine.Duplicate)
    assert repeat.original == encode_decision(first.decision)
    card = got.cards[(0, "c1")]
    back = engine.record_from_bytes(engine.record_to_bytes(card))
    assert back.replies == card.replies
    # Old records (no replies) still read; records without replies are written as before.
    assert engine.record_from_bytes(orjson.dumps({"f": None, "s": {"t": 1.0}})).replies == {}
    assert b'"r"' not in engine.record_to_bytes(engine.CardRecord(seen={"t": 1.0}))


def test_replies_are_forgotten_with_their_ids_past_the_dedup_window() -> None:
    day1 = step([request(0, tx("t1", "c1", "2024-05-01T12:00:00+00:00"), b"c1")])
    later = step([request(0, tx("t2", "c1", "2024-05-03T12:00:00+00:00"), b"c1")], dict(day1.cards))
    card = later.cards[(0, "c1")]
    assert list(card.seen) == ["t2"]
    assert list(card.replies) == ["t2"]
