"""The decision policy as its own versioned object: thresholds per model version and segment,
its wire form and what it refuses."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from fraudstream.core.messages import Transaction
from fraudstream.core.policy import (
    NO_POLICY,
    ModelPolicy,
    Policy,
    Segment,
    SegmentThresholds,
    Thresholds,
    decide,
    decide_under,
    decode_policy,
    encode_policy,
)
from fraudstream.errors import InvalidMessage

OWN = Thresholds(review=0.5, decline=0.9)


def tx(amount: float = 10.0, channel: str | None = "pos", mcc: int | None = 5411) -> Transaction:
    return Transaction(
        "t", "c", "m", amount, "EUR", "2024-05-01T12:00:00+00:00", 0.0, 0, mcc, "FR", channel
    )


POLICY = Policy(
    version=4,
    models={
        "v1": ModelPolicy(
            default=Thresholds(0.3, 0.8),
            segments=(
                SegmentThresholds(
                    "ecom-large",
                    Segment(channel="ecom", amount_min=500.0),
                    Thresholds(0.1, 0.4),
                ),
                SegmentThresholds("gambling", Segment(mcc=frozenset({7995})), Thresholds(0.2, 0.6)),
                SegmentThresholds(
                    "small-usd", Segment(currency="USD", amount_max=5.0), Thresholds(0.7, 0.99)
                ),
            ),
        ),
        "*": ModelPolicy(default=Thresholds(0.45, 0.95)),
    },
    updated_at="2026-11-29T08:00:00.000+00:00",
    note="test",
)


def test_the_first_matching_segment_then_the_models_default_then_any_model() -> None:
    assert POLICY.thresholds("v1", tx(600, "ecom"), OWN) == Thresholds(0.1, 0.4)
    assert POLICY.thresholds("v1", tx(499.99, "ecom"), OWN) == Thresholds(0.3, 0.8)
    assert POLICY.thresholds("v1", tx(600, "ecom", 7995), OWN) == Thresholds(0.1, 0.4)
    assert POLICY.thresholds("v1", tx(600, "pos", 7995), OWN) == Thresholds(0.2, 0.6)
    assert POLICY.thresholds("v2", tx(600, "ecom"), OWN) == Thresholds(0.45, 0.95)
    no_default = Policy(1, {"v1": ModelPolicy(segments=POLICY.models["v1"].segments)})
    assert no_default.thresholds("v1", tx(), OWN) == OWN
    assert no_default.thresholds("v9", tx(), OWN) == OWN
    assert NO_POLICY.thresholds("v1", tx(), OWN) == OWN
    assert NO_POLICY.version == 0


def test_decide_under_a_policy_matches_deciding_one_by_one() -> None:
    rng = np.random.default_rng(7)
    txs = [
        tx(float(a), str(c), int(m))
        for a, c, m in zip(
            rng.uniform(0, 1000, 400),
            rng.choice(["pos", "ecom"], 400),
            rng.choice([5411, 7995], 400),
            strict=True,
        )
    ]
    scores = rng.uniform(0, 1, 400)
    for version in ("v1", "v2"):
        got = decide_under(POLICY, version, scores, txs, OWN)
        want = [
            decide(float(s), POLICY.thresholds(version, t, OWN))
            for s, t in zip(scores, txs, strict=True)
        ]
        assert got == want
    assert decide_under(NO_POLICY, "v1", scores, txs, OWN) == [
        decide(float(s), OWN) for s in scores
    ]


def test_the_wire_form_round_trips() -> None:
    raw = encode_policy(POLICY)
    assert decode_policy(raw) == POLICY
    obj = orjson.loads(raw)
    assert obj["models"]["v1"]["segments"][0] == {
        "name": "ecom-large",
        "when": {"channel": "ecom", "amount_min": 500.0},
        "review": 0.1,
        "decline": 0.4,
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"models": {"v1": {"review": 0.9, "decline": 0.5}}}, "review <= decline"),
        ({"models": {"v1": {"review": 0.5}}}, "both review and decline"),
        ({"models": {"v1": {"review": 1.5, "decline": 1.6}}}, "greater than the maximum"),
        (
            {
                "models": {
                    "v1": {
                        "segments": [
                            {"name": "a", "review": 0.1, "decline": 0.2},
                            {"name": "a", "review": 0.1, "decline": 0.2},
                        ]
                    }
                }
            },
            "repeats",
        ),
        (
            {
                "models": {
                    "v1": {
                        "segments": [
                            {
                                "name": "a",
                                "when": {"amount_min": 10, "amount_max": 10},
                                "review": 0.1,
                                "decline": 0.2,
                            }
                        ]
                    }
                }
            },
            "empty band",
        ),
        ({"version": 0}, "less than the minimum"),
        (
            {"models": {"v1": {"segments": [{"name": "a", "when": {"channel": "web"}}]}}},
            "missing required field(s): review, decline",
        ),
        (
            {
                "models": {
                    "v1": {
                        "segments": [
                            {"name": "a", "when": {"channel": "web"}, "review": 0, "decline": 1}
                        ]
                    }
                }
            },
            "'web' is not one of pos, ecom, atm, moto",
        ),
    ],
)
def test_an_inconsistent_policy_is_refused_with_what_is_wrong(change: dict, words: str) -> None:
    obj = {"version": 1, "models": {}, **change}
    with pytest.raises(InvalidMessage) as err:
        decode_policy(orjson.dumps(obj))
    assert words in err.value.message
    assert err.value.reason in ("bad_policy", "schema")


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    obj = {"version": 2, "models": {}, "owner": "fraud-ops"}
    assert decode_policy(orjson.dumps(obj)) == dataclasses.replace(NO_POLICY, version=2)
