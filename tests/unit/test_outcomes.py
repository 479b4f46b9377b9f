"""The feedback join: outcomes, reversals, races, and the confusion counts behind the report."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fraudstream.core.messages import Decision, Feedback, Shadow
from fraudstream.core.outcomes import (
    Confusion,
    JoinRecord,
    NoDecision,
    apply_decision_after_label,
    apply_label,
    classify,
    hold_label,
    outcomes_of,
    record_decision,
)
from fraudstream.errors import FraudStreamError

DECISION = Decision(
    "tx-1", "card-1", "review", 0.7, "v1", "champion", (), "2024-05-01T00:00:00Z", 80.0, "EUR"
)
SHADOWED = replace(DECISION, shadow=Shadow("v2", 0.2, "approve"))
FRAUD = Feedback("tx-1", True, "chargeback", "2024-05-10T00:00:00Z")
GENUINE = Feedback("tx-1", False, "analyst", "2024-05-11T00:00:00Z")


@pytest.mark.parametrize(
    ("decision", "is_fraud", "kind"),
    [
        ("decline", True, "TP"),
        ("review", True, "TP"),
        ("decline", False, "FP"),
        ("review", False, "FP"),
        ("approve", True, "FN"),
        ("approve", False, "TN"),
    ],
)
def test_classify(decision: str, is_fraud: bool, kind: str) -> None:
    assert classify(decision, is_fraud) == kind  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- Confusion


def test_confusion_metrics() -> None:
    c = Confusion()
    assert c.get() == {"precision": None, "recall": None, "fpr": None, "accuracy": None}
    for kind, amount in [("TP", 10.0), ("TP", 5.0), ("FP", 1.0), ("FN", 7.0), ("TN", 2.0)]:
        c.update(kind, amount)  # type: ignore[arg-type]
    assert (c.tp, c.fp, c.tn, c.fn, c.n) == (2, 1, 1, 1, 5)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.fpr == pytest.approx(1 / 2)
    assert c.accuracy == pytest.approx(3 / 5)
    assert (c.fraud_amount_caught, c.fraud_amount_missed) == (15.0, 7.0)
    assert (c.good_amount_flagged, c.good_amount_approved) == (1.0, 2.0)


def test_confusion_revert_never_below_zero() -> None:
    c = Confusion()
    c.update("FP", 0.1)
    c.update("FP", 0.2)
    c.revert("FP", 0.1)
    c.revert("FP", 0.2)
    assert c == Confusion()  # amount back to exactly 0.0, no float residue
    with pytest.raises(ValueError, match="already 0"):
        c.revert("FP", 1.0)
    assert c == Confusion()


def test_confusion_storage_and_merge() -> None:
    a = Confusion(tp=1, fraud_amount_caught=3.5)
    b = Confusion(tp=2, fn=1, fraud_amount_caught=1.0, fraud_amount_missed=2.0)
    stored = json.loads(json.dumps(a.to_dict()))
    assert Confusion.from_dict(stored) == a
    merged = a.merge(b)
    assert merged == Confusion(tp=3, fn=1, fraud_amount_caught=4.5, fraud_amount_missed=2.0)
    assert a == Confusion(tp=1, fraud_amount_caught=3.5)  # merge does not mutate


# ---------------------------------------------------------------------------- the join


def test_first_label_counts_decider_and_shadow() -> None:
    rec = record_decision(None, SHADOWED)
    rec, reverted, new = apply_label(rec, FRAUD, "2024-05-10T00:00:01Z")
    assert reverted == []
    assert [(o.model_version, o.variant, o.outcome) for o in new] == [
        ("v1", "champion", "TP"),
        ("v2", "shadow", "FN"),
    ]
    assert all(o.amount == 80.0 and o.currency == "EUR" for o in new)
    assert all(o.labelled_at == "2024-05-10T00:00:01Z" for o in new)
    # The card and the decision time travel with every outcome: reports cluster by card and
    # window by decision time without reading fraud.decisions.
    assert all(o.card_id == "card-1" and o.decided_at == DECISION.decided_at for o in new)


def test_label_reversal_moves_one_count_per_model_and_nothing_else() -> None:
    counts = Confusion()
    rec = record_decision(None, DECISION)
    rec, reverted, new = apply_label(rec, FRAUD, "t1")
    assert reverted == []
    for o in new:
        counts.update(o.outcome, o.amount)
    assert counts == Confusion(tp=1, fraud_amount_caught=80.0)

    rec, reverted, new = apply_label(rec, GENUINE, "t2")
    assert [(o.model_version, o.outcome) for o in reverted] == [("v1", "TP")]
    assert [(o.model_version, o.outcome) for o in new] == [("v1", "FP")]
    for o in reverted:
        counts.revert(o.outcome, o.amount)
    for o in new:
        counts.update(o.outcome, o.amount)
    assert counts == Confusion(fp=1, good_amount_flagged=80.0)
    assert rec.label is not None
    assert rec.label.is_fraud is False


def test_same_label_again_is_a_no_op_but_updates_the_label() -> None:
    rec, _, _ = apply_label(record_decision(None, DECISION), FRAUD, "t1")
    again = Feedback("tx-1", True, "analyst", "2024-05-12T00:00:00Z")
    rec2, reverted, new = apply_label(rec, again, "t2")
    assert (reverted, new) == ([], [])
    assert rec2.label is not None
    assert (rec2.label.source, rec2.label.labelled_at) == ("analyst", "t2")


def test_label_without_decision_raises_no_decision() -> None:
    with pytest.raises(NoDecision, match="tx-1") as info:
        apply_label(None, FRAUD, "t1")
    assert isinstance(info.value, FraudStreamError)
    assert info.value.transaction_id == "tx-1"
    with pytest.raises(NoDecision):
        apply_label(hold_label(None, GENUINE, "t0"), FRAUD, "t1")


def test_label_raced_ahead_of_decision() -> None:
    held = hold_label(None, FRAUD, "t1")
    assert outcomes_of(held) == []
    rec, reverted, new = apply_decision_after_label(held, DECISION)
    assert reverted == []
    assert [(o.model_version, o.outcome, o.labelled_at) for o in new] == [("v1", "TP", "t1")]
    # A redelivered decision counts nothing twice.
    assert apply_decision_after_label(rec, DECISION)[1:] == ([], [])
    with pytest.raises(ValueError, match="apply_label"):
        hold_label(rec, GENUINE, "t2")


def test_decision_without_label_emits_nothing() -> None:
    rec, reverted, new = apply_decision_after_label(None, DECISION)
    assert (reverted, new) == ([], [])
    assert rec.decided is not None


def test_record_roundtrips_through_its_compact_dict() -> None:
    rec, _, _ = apply_label(record_decision(None, SHADOWED), FRAUD, "t1")
    stored = json.loads(json.dumps(rec.to_dict()))
    assert JoinRecord.from_dict(stored) == rec
    assert JoinRecord.from_dict(JoinRecord("tx-9").to_dict()) == JoinRecord("tx-9")


def test_records_load_across_versions_of_the_worker() -> None:
    """card_id is stored under its own key: a previous version's from_dict (positional
    Decided(*d), ignoring other keys) reads what this version writes."""
    rec = record_decision(None, DECISION)
    stored = json.loads(json.dumps(rec.to_dict()))
    assert len(stored["d"]) == 7
    assert stored["c"] == "card-1"
    assert JoinRecord.from_dict(stored) == rec


def test_a_record_stored_before_card_id_existed_still_loads() -> None:
    old = {
        "t": "tx-1",
        "d": ["v1", "champion", "review", 0.7, 80.0, "EUR", "2024-05-01T00:00:00Z"],
        "s": [],
        "l": None,
    }
    rec = JoinRecord.from_dict(old)
    assert rec.decided is not None
    assert rec.decided.card_id == ""
    # A redelivered decision fills it in without counting the outcome again.
    rec, _, _ = apply_label(rec, FRAUD, "t1")
    again, reverted, new = apply_decision_after_label(rec, DECISION)
    assert (reverted, new) == ([], [])
    assert again.decided is not None
    assert again.decided.card_id == "card-1"
