"""Card precision@k and the known-fraud filter against a transcription of the Fraud Detection
Handbook's own code (chapter 3: card_precision_top_k, get_train_test_set)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from fraudstream.core import quality

DAY = 86400.0


def handbook_card_precision(
    day: list[int], card: list[int], y: list[int], s: list[float], k: int
) -> float:
    """The Handbook's card_precision_top_k, transcribed without pandas."""
    detected: list[int] = []
    per_day = []
    for d in sorted(set(day)):
        rows = [(c, sc, lab) for dd, c, lab, sc in zip(day, card, y, s, strict=True) if dd == d]
        rows = [r for r in rows if r[0] not in detected]
        best: dict[int, tuple[float, int]] = {}
        for c, sc, lab in rows:
            b = best.get(c, (-math.inf, 0))
            best[c] = (max(b[0], sc), max(b[1], lab))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        hits = [c for c, (_, lab) in ranked if lab == 1]
        per_day.append(len(hits) / k)
        detected.extend(hits)
    return float(np.mean(per_day))


@pytest.mark.parametrize("seed", range(6))
def test_card_precision_matches_the_handbook(seed: int) -> None:
    rng = random.Random(seed)
    n = 600
    day = [rng.randrange(5) for _ in range(n)]
    card = [rng.randrange(60) for _ in range(n)]
    y = [int(rng.random() < 0.15) for _ in range(n)]
    s = [round(rng.random(), 3) for _ in range(n)]  # ties happen
    got = quality.card_precision_at_k(np.array(day), np.array(card), np.array(y), np.array(s), 7)
    assert got.mean == pytest.approx(handbook_card_precision(day, card, y, s, 7))
    assert len(got.per_day) == 5


def test_card_precision_divides_by_k_and_skips_detected_cards() -> None:
    day = np.array([0, 0, 0, 1, 1])
    card = np.array([1, 2, 3, 1, 2])
    y = np.array([1, 0, 1, 1, 1])
    s = np.array([0.9, 0.8, 0.1, 0.9, 0.2])
    cp = quality.card_precision_at_k(day, card, y, s, 2)
    # Day 0: top 2 = cards 1 (fraud) and 2 → 1/2. Day 1: card 1 was detected, left out; top 2 =
    # card 2 only (fraud) → 1/2 (over k, not over the cards left).
    assert cp.per_day == (0.5, 0.5)
    assert cp.defrauded_cards == (2, 1)


def test_known_defrauded_day() -> None:
    # Reported during day 10 → known from day 11; exactly at midnight of day 12 → from day 13
    # ("before the day's start" is strict).
    known = quality.known_defrauded_day({"a": 10 * DAY + 5.0, "b": 12 * DAY})
    assert known == {"a": 11, "b": 13}


def test_pr_curve_and_average_precision_agree() -> None:
    y = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1])
    precision, recall, thr = quality.pr_curve(y, s)
    assert thr.tolist() == [0.9, 0.8, 0.3, 0.2, 0.1]
    assert precision.tolist() == pytest.approx([1.0, 2 / 3, 0.5, 0.4, 0.5])
    assert recall.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0])
    assert quality.average_precision(y, s) == pytest.approx((1 + 2 / 3 + 0.5) / 3)


def test_the_ceiling_ranks_knowable_frauds_first_and_the_rest_as_the_model() -> None:
    # One day, k = 2. The model ranks genuine card 1 first and misses both frauds; the oracle
    # puts the knowable fraud (card 3) first, then follows the model: card 1, not card 4 (a
    # fraud it cannot know of).
    day = np.zeros(4, dtype=np.int64)
    card = np.array([1, 2, 3, 4])
    y = np.array([0, 0, 1, 1], dtype=bool)
    s = np.array([0.9, 0.5, 0.1, 0.2])
    knowable = np.array([False, False, True, False])
    assert quality.card_precision_at_k(day, card, y, s, 2).mean == 0.0
    assert quality.card_precision_ceiling(day, card, y, s, knowable, 2).mean == 0.5
    # Knowing both: the ceiling is every fraud card found.
    assert quality.card_precision_ceiling(day, card, y, s, y, 2).mean == 1.0


def test_the_ceiling_by_chance_is_seeded_and_bounded_by_the_frauds() -> None:
    rng = np.random.default_rng(3)
    n = 400
    day = rng.integers(0, 3, n)
    card = rng.integers(0, 60, n)
    y = rng.random(n) < 0.1
    knowable = y & (rng.random(n) < 0.5)
    a = quality.card_precision_ceiling_by_chance(day, card, y, knowable, 5, draws=30, seed=7)
    b = quality.card_precision_ceiling_by_chance(day, card, y, knowable, 5, draws=30, seed=7)
    assert a.tolist() == b.tolist()
    assert len(a) == 30
    # Never below what the knowable frauds alone give, never above every fraud card known.
    low = quality.card_precision_ceiling(day, card, y, np.zeros(n), knowable, 5).mean
    high = quality.card_precision_ceiling(day, card, y, np.zeros(n), y, 5).mean
    assert low - 1e-9 <= a.min()
    assert a.max() <= high + 1e-9
