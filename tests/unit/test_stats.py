from __future__ import annotations

import math

import pytest

from fraudstream.core.stats import mcnemar, min_samples_note, two_proportion_z_test, wilson


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
