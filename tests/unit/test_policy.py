from __future__ import annotations

import math

import numpy as np
import pytest

from fraudstream.core.messages import Reason
from fraudstream.core.policy import (
    Thresholds,
    decide,
    decide_many,
    top_reasons,
    top_reasons_rows,
)
from fraudstream.errors import ConfigError, ScoringError

T = Thresholds(review=0.5, decline=0.9)


@pytest.mark.parametrize(
    ("score", "kind"),
    [
        (0.0, "approve"),
        (0.4999, "approve"),
        (0.5, "review"),
        (0.89, "review"),
        (0.9, "decline"),
        (1.0, "decline"),
    ],
)
def test_decide(score: float, kind: str) -> None:
    assert decide(score, T) == kind


def test_decide_many_matches_decide() -> None:
    scores = np.array([0.0, 0.5, 0.4999, 0.9, 0.95, 0.7, 1.0], dtype=np.float32)
    assert decide_many(scores, T) == [decide(float(s), T) for s in scores]
    assert decide_many(np.array([]), T) == []


def test_nan_score_is_refused() -> None:
    with pytest.raises(ScoringError) as info:
        decide(float("nan"), T)
    assert info.value.reason == "nan_score"
    with pytest.raises(ScoringError):
        decide_many(np.array([0.1, np.nan]), T)


@pytest.mark.parametrize(
    ("review", "decline"), [(0.9, 0.5), (-0.1, 0.5), (0.5, 1.1), (np.nan, 0.5)]
)
def test_thresholds_validate(review: float, decline: float) -> None:
    with pytest.raises(ConfigError, match="review <= decline"):
        Thresholds(review, decline)


def test_equal_thresholds_skip_review() -> None:
    t = Thresholds(0.7, 0.7)
    assert [decide(s, t) for s in (0.69, 0.7)] == ["approve", "decline"]


NAMES = ["amount", "hour", "velocity", "new_device"]


def test_top_reasons_positive_first_bias_dropped() -> None:
    contribs = np.array([0.3, -0.2, 1.2, 0.05, 9.0])  # last = bias, larger than all: ignored
    values = np.array([120.1234567, 3.0, 7.0, 1.0])
    assert top_reasons(contribs, NAMES, values) == (
        Reason("velocity", 7.0, 1.2),
        Reason("amount", 120.123457, 0.3),
        Reason("new_device", 1.0, 0.05),
    )


def test_top_reasons_fills_up_with_the_largest_remaining() -> None:
    contribs = np.array([-0.3, -0.2, 0.4, -0.9])  # no bias column
    values = np.zeros(4)
    got = top_reasons(contribs, NAMES, values, k=3)
    assert [r.feature for r in got] == ["velocity", "hour", "amount"]
    assert [r.contribution for r in got] == [0.4, -0.2, -0.3]


def test_top_reasons_k_and_types() -> None:
    contribs = np.array([0.1, 0.2, 0.3, 0.4, 0.0], dtype=np.float32)
    got = top_reasons(contribs, NAMES, np.array([1, 2, 3, 4], dtype=np.float32), k=10)
    assert len(got) == 4
    assert all(type(r.value) is float and type(r.contribution) is float for r in got)
    assert got[0].contribution == 0.4  # rounded: no float32 residue
    assert top_reasons(contribs, NAMES, np.zeros(4), k=0) == ()


def test_top_reasons_nan_contribution_sorts_last() -> None:
    got = top_reasons(np.array([np.nan, 0.1, -0.1, 0.2]), NAMES, np.zeros(4), k=4)
    assert [r.feature for r in got] == ["new_device", "hour", "velocity", "amount"]


def test_top_reasons_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        top_reasons(np.zeros(7), NAMES, np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        top_reasons(np.zeros(5), NAMES, np.zeros(3))
    with pytest.raises(ValueError, match="one row"):
        top_reasons(np.zeros((1, 5)), NAMES, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shape"):
        top_reasons_rows(np.zeros((2, 5)), NAMES, np.zeros((3, 4)))


def _plain_top(c: list[float], v: list[float], k: int) -> list[tuple[str, float, float]]:
    """An independent reference: Python's stable sort, largest contribution first, NaN last."""
    order = sorted(
        range(len(NAMES)), key=lambda i: (math.isnan(c[i]), -c[i] if c[i] == c[i] else 0)
    )
    return [(NAMES[i], round(v[i], 6), round(c[i], 6)) for i in order[:k]]


@pytest.mark.parametrize("bias", [False, True])
def test_top_reasons_rows_matches_a_plain_sort_of_each_row(bias: bool) -> None:
    # Ties (values drawn from a few levels), NaNs and float32 inputs, as a flagged batch has.
    rng = np.random.default_rng(7)
    contribs = rng.choice([-0.5, -0.1, 0.0, 0.1, 0.3, np.nan], size=(200, 4 + bias))
    contribs = contribs.astype(np.float32)
    values = rng.normal(size=(200, 4)).astype(np.float32)
    for k in (0, 1, 3, 4):
        got = [
            [(r.feature, r.value, r.contribution) for r in row]
            for row in top_reasons_rows(contribs, NAMES, values, k)
        ]
        want = [
            _plain_top([float(x) for x in c[:4]], [float(x) for x in v], k)
            for c, v in zip(contribs, values, strict=True)
        ]
        assert repr(got) == repr(want)  # repr: a NaN contribution is not equal to itself
        # The one-row form is the same function.
        assert repr(top_reasons(contribs[5], NAMES, values[5], k)) == repr(
            top_reasons_rows(contribs[5:6], NAMES, values[5:6], k)[0]
        )
    assert top_reasons_rows(np.zeros((0, 4)), NAMES, np.zeros((0, 4))) == []
