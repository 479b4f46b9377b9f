"""Choosing thresholds by flag rate and by cost (``policy suggest``): the cost optimum equals a
brute force over every pair of cuts; ties are never split."""

from __future__ import annotations

import numpy as np
import pytest

from fraudstream.core.policy import decide_many
from fraudstream.core.thresholds import Costs, by_cost, by_flag_rate
from fraudstream.errors import ConfigError


def brute_force(scores: np.ndarray, fraud: np.ndarray, amount: np.ndarray, c: Costs) -> float:
    cuts = sorted({0.0, 1.0, *np.unique(scores), *(s + 1e-12 for s in np.unique(scores))})
    best = np.inf
    for r in cuts:
        for d in cuts:
            if d < r:
                continue
            review = (scores >= r) & (scores < d)
            decline = scores >= d
            approve = scores < r
            cost = (
                amount[approve & fraud].sum()
                + c.review * review.sum()
                + c.decline_good * (decline & ~fraud).sum()
            )
            best = min(best, cost)
    return float(best)


def cost_of(choice_scores: np.ndarray, fraud: np.ndarray, amount: np.ndarray, t, c: Costs) -> float:
    kinds = np.array(decide_many(choice_scores, t))
    return float(
        amount[(kinds == "approve") & fraud].sum()
        + c.review * (kinds == "review").sum()
        + c.decline_good * ((kinds == "decline") & ~fraud).sum()
    )


@pytest.mark.parametrize("seed", range(12))
def test_the_cost_optimum_is_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    fraud = rng.random(n) < 0.2
    # Informative but noisy scores, rounded so that ties happen.
    scores = np.clip(np.round(0.3 * fraud + rng.random(n) * 0.7, 2), 0, 1)
    amount = rng.uniform(1, 400, n)
    costs = Costs(review=float(rng.uniform(1, 30)), decline_good=float(rng.uniform(5, 100)))
    choice = by_cost(scores, fraud, amount, costs)
    assert choice.cost == pytest.approx(brute_force(scores, fraud, amount, costs))
    # And the thresholds, applied as the worker applies them, cost exactly that.
    assert cost_of(scores, fraud, amount, choice.thresholds, costs) == pytest.approx(choice.cost)


def test_costly_reviews_and_cheap_declines_move_the_cuts() -> None:
    rng = np.random.default_rng(1)
    fraud = rng.random(5000) < 0.02
    scores = np.clip(0.5 * fraud + rng.random(5000) * 0.6, 0, 1)
    amount = np.full(5000, 100.0)
    cheap = by_cost(scores, fraud, amount, Costs(review=1.0, decline_good=500.0))
    dear = by_cost(scores, fraud, amount, Costs(review=80.0, decline_good=500.0))
    assert cheap.flagged > dear.flagged
    assert cheap.recall >= dear.recall


def test_flag_rates_are_upper_bounds_and_ties_are_not_split() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    fraud = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    c = by_flag_rate(scores, fraud, review_rate=0.4, decline_rate=0.2)
    assert (c.flagged, c.declined) == (4, 1)  # 2 would split the 0.8 tie
    kinds = decide_many(scores, c.thresholds)
    assert kinds.count("decline") == 1
    assert kinds.count("review") + kinds.count("decline") == 4
    assert (c.frauds, c.frauds_flagged, c.recall) == (3, 3, 1.0)
    none = by_flag_rate(scores, fraud, 0.0, 0.0)
    assert (none.thresholds.review, none.thresholds.decline, none.flagged) == (1.0, 1.0, 0)


def test_refusals_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="decline rate <= review rate"):
        by_flag_rate([0.1], [False], 0.01, 0.1)
    with pytest.raises(ConfigError, match="no scored rows"):
        by_flag_rate([], [], 0.1, 0.01)
    with pytest.raises(ConfigError, match=">= 0"):
        Costs(review=-1, decline_good=1)
