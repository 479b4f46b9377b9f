"""From a score to a decision, and the reasons shown with it. Pure and vectorised where it pays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudstream.core.messages import DecisionKind, Reason
from fraudstream.errors import ConfigError, ScoringError

_KINDS: tuple[DecisionKind, DecisionKind, DecisionKind] = ("approve", "review", "decline")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A score >= ``decline`` is declined, >= ``review`` goes to review, anything lower approved."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        # NaN fails every comparison, so this also refuses NaN thresholds.
        if not (0.0 <= self.review <= self.decline <= 1.0):
            raise ConfigError(
                f"thresholds must satisfy 0 <= review <= decline <= 1, "
                f"got review={self.review}, decline={self.decline}"
            )


def decide(score: float, thresholds: Thresholds) -> DecisionKind:
    if score >= thresholds.decline:
        return "decline"
    if score >= thresholds.review:
        return "review"
    if math.isnan(score):
        # A NaN would otherwise be approved silently: refuse it loudly instead.
        raise ScoringError("nan_score", "the model returned NaN; the transaction cannot be decided")
    return "approve"


def decide_many(scores: npt.NDArray[np.floating], thresholds: Thresholds) -> list[DecisionKind]:
    """decide() for a batch, same rules (including the NaN refusal)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ScoringError("nan_score", "the model returned NaN; the batch cannot be decided")
    level = (scores >= thresholds.review).astype(np.int8) + (scores >= thresholds.decline)
    kinds = _KINDS
    return [kinds[i] for i in level.tolist()]


def top_reasons(
    contribs_row: npt.NDArray[np.floating],
    feature_names: Sequence[str],
    values_row: npt.NDArray[np.floating],
    k: int = 3,
) -> tuple[Reason, ...]:
    """The ``k`` features pushing the score most toward fraud, largest contribution first.

    ``contribs_row`` is one row of XGBoost ``pred_contribs``: one column per feature, then the
    bias, which is not a feature and is dropped. When fewer than ``k`` contributions are positive
    the largest remaining ones fill up. Ties keep feature order. Values round to 6 decimals.
    """
    n = len(feature_names)
    contribs = np.asarray(contribs_row, dtype=np.float64)
    if contribs.shape == (n + 1,):
        contribs = contribs[:n]
    elif contribs.shape != (n,):
        raise ValueError(
            f"contributions have shape {contribs.shape}; expected ({n},) or ({n + 1},) with bias"
        )
    values = np.asarray(values_row, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"values have shape {values.shape}; expected ({n},)")
    # NaN contributions sort last: -nan would otherwise land anywhere.
    order = np.argsort(np.where(np.isnan(contribs), np.inf, -contribs), kind="stable")[:k]
    return tuple(
        Reason(
            feature_names[i],
            round(float(values[i]), 6),
            round(float(contribs[i]), 6),
        )
        for i in order.tolist()
    )
