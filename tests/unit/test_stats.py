from __future__ import annotations

import math

import numpy as np
import pytest

from fraudstream.core.stats import (
    cluster_difference,
    cluster_rate,
    days_to_detect,
    mcnemar,
    min_samples_note,
    minimum_detectable_difference,
    two_proportion_z_test,
    wilson,
)


def test_wilson_known_values() -> None:
    low, high = wilson(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4)
    assert high == pytest.approx(0.3662, abs=1e-4)
    # k = 0: the upper bound is z^2 / (n + z^2).
    assert wilson(0, 10) == (0.0, pytest.approx(1.959963984540054**2 / (10 + 1.959963984540054**2)))
    assert wilson(10, 10) == (pytest.approx(1 - 0.2775328, abs=1e-7), 1.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_z_and_bounds() -> None:
    narrow = wilson(50, 100, z=1.0)
    wide = wilson(50, 100)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_two_proportion_z_test_hand_computed() -> None:
    # p1 = .45, p2 = .30, pooled .375, se = sqrt(.375 * .625 * .02) = 0.0684653
    z, p = two_proportion_z_test(45, 100, 30, 100)
    assert z == pytest.approx(0.15 / math.sqrt(0.375 * 0.625 * 0.02))
    assert z == pytest.approx(2.19089, abs=1e-5)
    assert p == pytest.approx(0.028460, abs=1e-6)
    z2, p2 = two_proportion_z_test(30, 100, 45, 100)
    assert (z2, p2) == (pytest.approx(-z), pytest.approx(p))


def test_two_proportion_z_test_undefined() -> None:
    assert two_proportion_z_test(0, 0, 5, 10) == (0.0, 1.0)
    assert two_proportion_z_test(0, 10, 0, 20) == (0.0, 1.0)
    assert two_proportion_z_test(10, 10, 20, 20) == (0.0, 1.0)


def test_mcnemar_exact() -> None:
    # n = 13, k = 3: 2 * (1 + 13 + 78 + 286) / 2^13
    stat, p = mcnemar(10, 3)
    assert stat == 3.0
    assert p == pytest.approx(2 * 378 / 8192)
    assert mcnemar(0, 5) == (0.0, 0.0625)
    assert mcnemar(4, 4)[1] == 1.0
    assert mcnemar(0, 0) == (0.0, 1.0)


def test_mcnemar_chi_square_with_continuity_correction() -> None:
    stat, p = mcnemar(30, 12)
    assert stat == pytest.approx(17**2 / 42)
    assert p == pytest.approx(0.0087119, abs=1e-6)  # chi2(1) survival at 6.881
    # chi2(1) at 3.841459 is the 5 % point.
    assert math.erfc(math.sqrt(3.841458820694124 / 2)) == pytest.approx(0.05)


def test_min_samples_note() -> None:
    assert min_samples_note(1000, 1000, 50, 60) is None
    note = min_samples_note(20, 1000, 5, 60, names=("challenger", "champion"))
    assert note is not None
    assert note.startswith("too few to say")
    assert "challenger has 20 observations" in note
    assert "champion" not in note
    note = min_samples_note(1000, 1000, 3, 998)
    assert note is not None
    assert "first has only 3" in note
    assert "second has only 2" in note


def test_cluster_rate_hand_computed() -> None:
    # Cards: 1 of 1, 0 of 2, 2 of 2 -> R = 3/5; residuals (y - R x) / X = .08, -.24, .16;
    # CR1 variance = 3/2 * (.0064 + .0576 + .0256) = .1344.
    r = cluster_rate([1, 0, 2, 0], [1, 2, 2, 0])
    assert r.value == pytest.approx(0.6)
    assert (r.numerator, r.denominator, r.cards) == (3.0, 5.0, 3)
    assert r.se == pytest.approx(math.sqrt(0.1344))
    # deff = var / (p (1 - p) / n) = .1344 / (.24 / 5)
    assert r.deff == pytest.approx(0.1344 / 0.048)
    lo, hi = r.ci95
    assert 0.0 <= lo < 0.6 < hi <= 1.0


def test_cluster_rate_edges() -> None:
    assert cluster_rate([], []).value is None
    assert cluster_rate([0, 0], [0, 0]).ci95 == (0.0, 1.0)
    one = cluster_rate([3], [4])
    assert (one.value, one.se, one.ci95) == (0.75, None, (0.0, 1.0))
    # All cards at 0 %: no spread, so each card counts once (never a zero-width interval).
    zero = cluster_rate([0, 0, 0], [5, 5, 5])
    assert zero.value == 0.0
    assert zero.ci95[0] == 0.0
    assert zero.ci95[1] == pytest.approx(wilson(0, 3)[1])
    with pytest.raises(ValueError, match="0 <= y <= x"):
        cluster_rate([3], [2])
    with pytest.raises(ValueError, match="same length"):
        cluster_rate([1, 2], [3])


def test_money_ratio_has_no_design_effect() -> None:
    r = cluster_rate([10.0, 0.0, 55.5], [20.0, 30.0, 55.5], counts=False)
    assert r.value == pytest.approx(65.5 / 105.5)
    assert r.deff is None
    assert r.se is not None


def test_cluster_difference_independent_equals_the_two_variances_summed() -> None:
    rng = np.random.default_rng(1)
    ya, xa = rng.integers(0, 3, 50).astype(float), np.full(50, 3.0)
    yb, xb = rng.integers(1, 4, 40).astype(float), np.full(40, 4.0)
    z50, z40 = np.zeros(50), np.zeros(40)
    d = cluster_difference(
        np.concatenate([ya, z40]), np.concatenate([xa, z40]),
        np.concatenate([z50, yb]), np.concatenate([z50, xb]),
    )  # fmt: skip
    a, b = cluster_rate(ya, xa), cluster_rate(yb, xb)
    assert a.value is not None
    assert b.value is not None
    assert d.difference == pytest.approx(b.value - a.value)
    # Same residuals; only the small-sample factor G/(G-1) differs (90 cards vs 50 and 40).
    assert a.se is not None
    assert b.se is not None
    approx = math.sqrt(a.se**2 * 49 / 50 + b.se**2 * 39 / 40) * math.sqrt(90 / 89)
    assert d.se == pytest.approx(approx)
    assert d.z == pytest.approx(d.difference / d.se)
    assert d.p_value == pytest.approx(math.erfc(abs(d.z) / math.sqrt(2)))
    assert d.cards == 90


def test_paired_difference_uses_the_pairing() -> None:
    """A shadow model that agrees with the decider on nearly every card: the paired interval is
    much narrower than if the two were independent samples."""
    rng = np.random.default_rng(2)
    x = rng.integers(1, 10, 300).astype(float)
    ya = rng.binomial(x.astype(int), 0.3).astype(float)
    yb = np.minimum(x, ya + (rng.random(300) < 0.1))  # flags one more on 10 % of cards
    paired = cluster_difference(ya, x, yb, x)
    z = np.zeros(300)
    unpaired = cluster_difference(
        np.concatenate([ya, z]), np.concatenate([x, z]), np.concatenate([z, yb]),
        np.concatenate([z, x]),
    )  # fmt: skip
    assert paired.difference == pytest.approx(unpaired.difference)
    assert paired.se is not None
    assert unpaired.se is not None
    assert paired.se < unpaired.se / 3
    assert paired.p_value < 1e-4


def test_cluster_difference_undefined_and_degenerate() -> None:
    d = cluster_difference([1], [2], [0], [0])
    assert (d.difference, d.p_value) == (None, 1.0)
    # Every card at 100 % vs every card at 0 %, three cards each: not "certain".
    d = cluster_difference([2, 1, 3, 0, 0, 0], [2, 1, 3, 0, 0, 0], [0] * 3 + [0] * 3,
                           [0] * 3 + [1, 2, 1])  # fmt: skip
    assert d.difference == -1.0
    assert d.se is not None
    assert d.se > 0.2
    assert d.p_value > 0.0


def test_power_arithmetic() -> None:
    # (z.975 + z.8) = 1.959964 + 0.841621 = 2.801585
    assert minimum_detectable_difference(0.01) == pytest.approx(0.02801585, abs=1e-7)
    assert minimum_detectable_difference(0.01, power=0.5) == pytest.approx(0.0195996, abs=1e-6)
    assert days_to_detect(0.01, 0.01, 2.0) == pytest.approx(2 * 2.801585**2, rel=1e-6)
    # Half the difference takes four times as long.
    assert days_to_detect(0.005, 0.01, 2.0) == pytest.approx(4 * days_to_detect(0.01, 0.01, 2.0))
    assert days_to_detect(0.0, 0.01, 2.0) is None
    assert days_to_detect(0.01, 0.0, 2.0) is None
