"""Hand-made decisions and outcomes for the report's and the export's tests."""

from __future__ import annotations

from fraudstream.core.messages import Decision, DecisionKind, Outcome, Shadow, iso_from_ts
from fraudstream.core.outcomes import classify

NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15); decision times are relative to it
DAY = 86400.0


def dec(
    tx: str,
    card: str,
    version: str,
    variant: str,
    decision: DecisionKind,
    *,
    age_days: float = 10.0,
    amount: float = 10.0,
    currency: str = "EUR",
    shadow: tuple[str, DecisionKind] | None = None,
) -> Decision:
    return Decision(
        tx,
        card,
        decision,
        0.9 if decision != "approve" else 0.1,
        version,
        variant,  # type: ignore[arg-type]
        (),
        iso_from_ts(NOW - age_days * DAY),
        amount,
        currency,
        shadow=None if shadow is None else Shadow(shadow[0], 0.5, shadow[1]),
    )


def out(d: Decision, is_fraud: bool, *, delay_days: float = 1.0, shadow: bool = False) -> Outcome:
    """The join's outcome for ``d`` (or for its shadow), labelled ``delay_days`` after it."""
    labelled = iso_from_ts(_ts(d.decided_at) + delay_days * DAY)
    if shadow:
        assert d.shadow is not None
        version, role, decision = d.shadow.model_version, "shadow", d.shadow.decision
    else:
        version, role, decision = d.model_version, d.variant, d.decision
    return Outcome(
        d.transaction_id,
        version,
        role,  # type: ignore[arg-type]
        decision,
        0.5,
        is_fraud,
        classify(decision, is_fraud),
        d.amount,
        d.currency,
        labelled,
        card_id=d.card_id,
        decided_at=d.decided_at,
    )


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
