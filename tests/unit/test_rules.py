"""Rules beside the model: lists, hard limits, precedence over the model, the wire form, and
card lists that never hold a card id."""

from __future__ import annotations

import orjson
import pytest

from fraudstream.core import features
from fraudstream.core.messages import Transaction
from fraudstream.core.rules import (
    NO_RULES,
    AmountRule,
    ListRule,
    RuleSet,
    VelocityRule,
    apply,
    card_digest,
    decode_rules,
    encode_rules,
    evaluate,
)
from fraudstream.errors import InvalidMessage


def tx(card: str = "card-1", amount: float = 10.0, **kw: object) -> Transaction:
    base = {
        "transaction_id": "t",
        "card_id": card,
        "merchant_id": "m-1",
        "amount": amount,
        "currency": "EUR",
        "event_time": "2024-05-01T12:00:00+00:00",
        "ts": 1714564800.0,
        "utc_offset_s": 0,
        "device_id": "dev-1",
    }
    return Transaction(**{**base, **kw})  # type: ignore[arg-type]


def row(**values: float) -> list[float]:
    out = [0.0] * features.N_FEATURES
    for name, v in values.items():
        out[features.FEATURE_NAMES.index(name)] = v
    return out


RULES = RuleSet(
    version=3,
    rules=(
        ListRule("stolen", "card", frozenset({card_digest("card-9")})),
        ListRule("trusted", "merchant", frozenset({"m-good"}), "approve"),
        ListRule("watch-devices", "device", frozenset({"dev-x"}), "review"),
        AmountRule("big-eur", 5000.0, "EUR", "review"),
        VelocityRule("burst", "1h", max_count=5),
        VelocityRule("spend-24h", "24h", max_amount=1000.0, action="review"),
    ),
)


def codes(t: Transaction, r: list[float] | None = None) -> list[tuple[str, str]]:
    return [(h.reason.code, h.reason.ref) for h in evaluate(RULES, t, r or row())]


def test_lists_match_card_merchant_and_device() -> None:
    assert codes(tx("card-9")) == [("RULE_BLOCK_CARD", "stolen")]
    assert codes(tx(merchant_id="m-good")) == [("RULE_ALLOW_MERCHANT", "trusted")]
    assert codes(tx(device_id="dev-x")) == [("RULE_REVIEW_DEVICE", "watch-devices")]
    assert codes(tx(device_id=None)) == []
    assert codes(tx()) == []


def test_a_card_hit_names_the_rule_and_never_the_card() -> None:
    (hit,) = evaluate(RULES, tx("card-9"), row())
    assert hit.action == "decline"
    assert "card-9" not in hit.reason.text
    assert hit.reason.text == "card is on list 'stolen' (decline)"


def test_amount_limit_above_max_in_its_currency_only() -> None:
    def amount_codes(t: Transaction) -> list[tuple[str, str]]:
        return [c for c in codes(t) if c[0] == "RULE_AMOUNT_LIMIT"]

    assert amount_codes(tx(amount=5000.0)) == []
    assert amount_codes(tx(amount=5000.01)) == [("RULE_AMOUNT_LIMIT", "big-eur")]
    assert amount_codes(tx(amount=9000.0, currency="USD")) == []
    (hit, _) = evaluate(RULES, tx(amount=6100.0), row())
    assert hit.reason.text == "amount 6,100.00 EUR is over the limit of 5,000.00 EUR (review)"


def test_velocity_counts_this_transaction_too() -> None:
    assert codes(tx(), row(card_count_1h=4)) == []
    assert codes(tx(), row(card_count_1h=5)) == [("RULE_VELOCITY_LIMIT", "burst")]
    (hit,) = evaluate(RULES, tx(), row(card_count_1h=11))
    assert hit.reason.text == (
        "card's transaction number 12 within 1 hour, over the limit of 5 (decline)"
    )
    assert codes(tx(amount=10.0), row(card_amount_24h=990.0)) == []
    assert codes(tx(amount=10.01), row(card_amount_24h=990.0)) == [
        ("RULE_VELOCITY_LIMIT", "spend-24h")
    ]


def test_velocity_rules_read_features_every_shipped_feature_set_has() -> None:
    for window in ("1h", "24h", "7d"):
        for name in (f"card_count_{window}", f"card_amount_{window}"):
            assert name in features.FEATURE_NAMES


@pytest.mark.parametrize(
    ("model", "actions", "final"),
    [
        ("approve", [], "approve"),
        ("decline", [], "decline"),
        ("approve", ["decline"], "decline"),
        ("approve", ["approve", "decline"], "decline"),
        ("decline", ["approve"], "approve"),
        ("review", ["approve", "review"], "approve"),
        ("approve", ["review"], "review"),
        ("decline", ["review"], "decline"),
    ],
)
def test_precedence_block_over_allow_over_review_over_the_model(
    model: str, actions: list[str], final: str
) -> None:
    hits = [
        h
        for a in actions
        for h in evaluate(
            RuleSet(1, (ListRule(f"r-{a}", "merchant", frozenset({"m-1"}), a),)),  # type: ignore[arg-type]
            tx(),
            row(),
        )
    ]
    assert apply(model, hits) == final  # type: ignore[arg-type]


def test_no_rules_no_hits() -> None:
    assert evaluate(NO_RULES, tx("card-9"), row(card_count_1h=99)) == ()
    assert NO_RULES.version == 0


def test_the_wire_form_round_trips_and_holds_no_card_id() -> None:
    raw = encode_rules(RULES)
    assert b"card-9" not in raw
    assert decode_rules(raw) == RULES


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ([{"id": "a", "kind": "list", "field": "card", "values": ["card-9"]}], "sha256 digests"),
        ([{"id": "a", "kind": "velocity", "window": "1h"}], "max_count, max_amount or both"),
        (
            [
                {"id": "a", "kind": "amount", "max": 1},
                {"id": "a", "kind": "amount", "max": 2},
            ],
            "repeated: ['a']",
        ),
        ([{"id": "a b", "kind": "amount", "max": 1}], "not valid"),
        ([{"id": "a", "kind": "velocity", "window": "2h", "max_count": 3}], "not valid"),
    ],
)
def test_an_inconsistent_rule_set_is_refused_with_what_is_wrong(rules: list, words: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        decode_rules(orjson.dumps({"version": 1, "rules": rules}))
    assert words in err.value.message
