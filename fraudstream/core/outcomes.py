"""Decisions joined with fraud labels: outcomes, confusion counts, and the per-transaction join.

Everything here is pure. The wiring keeps one ``JoinRecord`` per transaction and one
``Confusion`` per partition, version and variant in tables (both storable through
``to_dict``/``from_dict``); each function returns the outcomes to *revert* and the outcomes to
*add*, so a label reversal moves one count from one cell to another and a repeated message
changes nothing. Shadow scores arrive inside their Decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from fraudstream.core.messages import (
    Decision,
    DecisionKind,
    Feedback,
    Outcome,
    OutcomeKind,
    Variant,
)
from fraudstream.errors import FraudStreamError


class NoDecision(FraudStreamError):
    """A label arrived for a transaction whose decision the join has not seen."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(
            f"feedback for transaction {transaction_id!r} but no decision is known for it "
            "(decision not yet joined, or the transaction id is wrong)"
        )
        self.transaction_id = transaction_id


def classify(decision: DecisionKind, is_fraud: bool) -> OutcomeKind:
    """TP flagged & fraud, FP flagged & genuine, FN approved & fraud, TN approved & genuine."""
    flagged = decision != "approve"
    if flagged:
        return "TP" if is_fraud else "FP"
    return "FN" if is_fraud else "TN"


# --------------------------------------------------------------------------------------------
# Confusion counts


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(slots=True)
class Confusion:
    """Confusion-matrix counts and the amounts behind them; update/revert like River's metrics.

    Amounts are summed as given: keep one Confusion per currency, or convert before, if several
    currencies mix.
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    fraud_amount_caught: float = 0.0  # TP
    good_amount_flagged: float = 0.0  # FP
    good_amount_approved: float = 0.0  # TN
    fraud_amount_missed: float = 0.0  # FN

    _CELLS: ClassVar[dict[str, tuple[str, str]]] = {
        "TP": ("tp", "fraud_amount_caught"),
        "FP": ("fp", "good_amount_flagged"),
        "TN": ("tn", "good_amount_approved"),
        "FN": ("fn", "fraud_amount_missed"),
    }

    def update(self, outcome: OutcomeKind, amount: float = 0.0) -> None:
        count, money = self._CELLS[outcome]
        setattr(self, count, getattr(self, count) + 1)
        setattr(self, money, getattr(self, money) + amount)

    def revert(self, outcome: OutcomeKind, amount: float = 0.0) -> None:
        """Undo one update(); a count never goes below zero (that would be a lost update)."""
        count, money = self._CELLS[outcome]
        current = getattr(self, count)
        if current <= 0:
            raise ValueError(f"cannot revert a {outcome}: the count is already 0")
        setattr(self, count, current - 1)
        # Back to exactly 0.0 with the last count, so float residue cannot build up.
        setattr(self, money, getattr(self, money) - amount if current > 1 else 0.0)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float | None:
        """Share of flagged transactions that were fraud."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        """Share of frauds that were flagged."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float | None:
        """Share of genuine transactions that were flagged."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.n)

    def get(self) -> dict[str, float | None]:
        """The derived metrics; None where undefined (an empty denominator)."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "fpr": self.fpr,
            "accuracy": self.accuracy,
        }

    def to_dict(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confusion:
        return cls(**{f.name: data.get(f.name, 0) for f in fields(cls)})

    def merge(self, other: Confusion) -> Confusion:
        """A new Confusion holding both (e.g. the partitions of several workers)."""
        return Confusion(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


# --------------------------------------------------------------------------------------------
# The join, one record per transaction


@dataclass(frozen=True, slots=True)
class Decided:
    """What the deciding model did."""

    model_version: str
    variant: Variant
    decision: DecisionKind
    score: float
    amount: float
    currency: str
    decided_at: str
    card_id: str = ""  # stored apart ("c"): records stored before it existed still load
    # Stored apart too ("m", "e"): the join's label events for entity state name the merchant
    # and the transaction's event time.
    merchant_id: str = ""
    event_time: str = ""


@dataclass(frozen=True, slots=True)
class ShadowScore:
    model_version: str
    score: float
    decision: DecisionKind


@dataclass(frozen=True, slots=True)
class Label:
    is_fraud: bool
    source: str
    reported_at: str
    labelled_at: str


@dataclass(frozen=True, slots=True)
class JoinRecord:
    transaction_id: str
    decided: Decided | None = None
    shadows: tuple[ShadowScore, ...] = field(default=())
    label: Label | None = None

    def to_dict(self) -> dict[str, Any]:
        """Compact positional form: millions of these sit in a changelog-backed table."""
        d = self.decided
        lab = self.label
        return {
            "t": self.transaction_id,
            "d": None
            if d is None
            else [
                d.model_version,
                d.variant,
                d.decision,
                d.score,
                d.amount,
                d.currency,
                d.decided_at,
            ],
            "s": [[s.model_version, s.score, s.decision] for s in self.shadows],
            "l": None
            if lab is None
            else [lab.is_fraud, lab.source, lab.reported_at, lab.labelled_at],
            # Its own key, not an 8th element of "d": a worker of the previous version, in a
            # rolling upgrade, still reads these records (and ignores keys it does not know).
            **({"c": d.card_id} if d is not None and d.card_id else {}),
            **({"m": d.merchant_id} if d is not None and d.merchant_id else {}),
            **({"e": d.event_time} if d is not None and d.event_time else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JoinRecord:
        d = data.get("d")
        lab = data.get("l")
        return cls(
            transaction_id=data["t"],
            decided=None
            if d is None
            else replace(
                Decided(*d),
                card_id=data.get("c", ""),
                merchant_id=data.get("m", ""),
                event_time=data.get("e", ""),
            ),
            shadows=tuple(ShadowScore(*s) for s in data.get("s", ())),
            label=None if lab is None else Label(*lab),
        )


def outcomes_of(rec: JoinRecord | None) -> list[Outcome]:
    """All outcomes the record supports now: none without both a decision and a label."""
    if rec is None or rec.decided is None or rec.label is None:
        return []
    d, lab = rec.decided, rec.label
    out = [
        Outcome(
            transaction_id=rec.transaction_id,
            model_version=d.model_version,
            variant=d.variant,
            decision=d.decision,
            score=d.score,
            is_fraud=lab.is_fraud,
            outcome=classify(d.decision, lab.is_fraud),
            amount=d.amount,
            currency=d.currency,
            labelled_at=lab.labelled_at,
            card_id=d.card_id,
            decided_at=d.decided_at,
        )
    ]
    out.extend(
        Outcome(
            transaction_id=rec.transaction_id,
            model_version=s.model_version,
            variant="shadow",
            decision=s.decision,
            score=s.score,
            is_fraud=lab.is_fraud,
            outcome=classify(s.decision, lab.is_fraud),
            amount=d.amount,
            currency=d.currency,
            labelled_at=lab.labelled_at,
            card_id=d.card_id,
            decided_at=d.decided_at,
        )
        for s in rec.shadows
        if s.model_version != d.model_version
    )
    return out


def _diff(before: list[Outcome], after: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """(reverted, new); outcomes differing only in labelled_at are the same count."""

    def sig(o: Outcome) -> tuple[object, ...]:
        return (o.decision, o.score, o.is_fraud, o.amount, o.currency)

    old = {(o.model_version, o.variant): o for o in before}
    cur = {(o.model_version, o.variant): o for o in after}
    reverted = [o for k, o in old.items() if k not in cur or sig(cur[k]) != sig(o)]
    added = [o for k, o in cur.items() if k not in old or sig(old[k]) != sig(o)]
    return reverted, added


def _empty(transaction_id: str) -> JoinRecord:
    return JoinRecord(transaction_id)


def record_decision(rec: JoinRecord | None, decision: Decision) -> JoinRecord:
    """Store the deciding model's decision (a redelivered one replaces the earlier copy)."""
    decided = Decided(
        model_version=decision.model_version,
        variant=decision.variant,
        decision=decision.decision,
        score=float(decision.score),
        amount=float(decision.amount),
        currency=decision.currency,
        decided_at=decision.decided_at,
        card_id=decision.card_id,
        merchant_id=decision.merchant_id,
        event_time=decision.event_time,
    )
    base = replace(rec or _empty(decision.transaction_id), decided=decided)
    if decision.shadow is None:
        return base
    sh = decision.shadow
    entry = ShadowScore(sh.model_version, float(sh.score), sh.decision)
    others = tuple(s for s in base.shadows if s.model_version != sh.model_version)
    return replace(base, shadows=(*others, entry))


def apply_label(
    rec: JoinRecord | None, feedback: Feedback, labelled_at: str
) -> tuple[JoinRecord, list[Outcome], list[Outcome]]:
    """Label a decided transaction: (record, outcomes to revert, outcomes to add).

    A first label only adds. A reversal reverts the previous outcomes and adds the new ones; the
    same label again changes nothing (empty lists; the stored label is updated). Raises
    NoDecision when the decision is not known: dead-letter, or keep it with ``hold_label``.
    """
    if rec is None or rec.decided is None:
        raise NoDecision(feedback.transaction_id)
    label = Label(feedback.is_fraud, feedback.source, feedback.reported_at, labelled_at)
    new_rec = replace(rec, label=label)
    reverted, added = _diff(outcomes_of(rec), outcomes_of(new_rec))
    return new_rec, reverted, added


def hold_label(rec: JoinRecord | None, feedback: Feedback, labelled_at: str) -> JoinRecord:
    """Keep a label that raced ahead of its decision; apply_decision_after_label counts it."""
    if rec is not None and rec.decided is not None:
        raise ValueError("the decision is known: use apply_label, which returns the outcomes")
    label = Label(feedback.is_fraud, feedback.source, feedback.reported_at, labelled_at)
    return replace(rec or _empty(feedback.transaction_id), label=label)


def apply_decision_after_label(
    rec: JoinRecord | None, decision: Decision
) -> tuple[JoinRecord, list[Outcome], list[Outcome]]:
    """record_decision, plus the outcomes it makes countable when a label is already held.

    (record, reverted, new): ``new`` is empty without a label; ``reverted`` is only non-empty when
    a *different* decision replaces one already counted.
    """
    new_rec = record_decision(rec, decision)
    reverted, added = _diff(outcomes_of(rec), outcomes_of(new_rec))
    return new_rec, reverted, added


__all__ = [
    "Confusion",
    "Decided",
    "JoinRecord",
    "Label",
    "NoDecision",
    "ShadowScore",
    "apply_decision_after_label",
    "apply_label",
    "classify",
    "hold_label",
    "outcomes_of",
    "record_decision",
]
