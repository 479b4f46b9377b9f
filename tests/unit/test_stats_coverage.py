"""Do the card-level intervals cover the truth 95 % of the time when cards are the unit?

Seeded simulations of a champion-vs-challenger split where whole cards go to one variant, cards
have unequal numbers of transactions and a card's transactions share its propensity (a card
either tends to be flagged, or its fraud burst tends to be caught, or not). The challenger's
true rate is higher by a known amount. Over 1,000 simulated experiments the card-level
(cluster-robust) 95 % interval must cover the truth 93–97 % of the time; the transaction-level
interval (transactions counted as independent, as the old report did) covers it far less often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from fraudstream.core.stats import (
    Z95,
    bootstrap_difference,
    bootstrap_rate,
    cluster_difference,
    cluster_rate,
    wilson,
)

SIMULATIONS = 1000


@dataclass(frozen=True)
class World:
    """Per-card rate ~ Beta(mean, concentration); transactions per card 1 + NegBin."""

    name: str
    cards_a: int
    cards_b: int
    rate_a: float
    rate_b: float
    concentration: float  # intra-card correlation = 1 / (1 + concentration)
    mean_tx: float  # mean transactions per card (1 + a heavy-tailed count)


WORLDS = [
    # Decline / false-positive-like rate: many cards, some busier than others.
    World("decline rate", 500, 200, 0.10, 0.13, 4.0, 8.0),
    # Recall-like: cards with a fraud burst (3-8 frauds each), caught together or missed together.
    World("recall", 400, 200, 0.60, 0.70, 1.5, 5.0),
]


def _simulate(w: World, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    def arm(cards: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
        a, b = rate * w.concentration, (1 - rate) * w.concentration
        p = rng.beta(a, b, size=(SIMULATIONS, cards))
        # Geometric-like number of extra transactions (mean w.mean_tx - 1), independent of p:
        # the ratio-of-sums estimand is then the mean rate.
        n = 1 + rng.negative_binomial(1, 1 / w.mean_tx, size=(SIMULATIONS, cards))
        return rng.binomial(n, p).astype(float), n.astype(float)

    ya, xa = arm(w.cards_a, w.rate_a)
    yb, xb = arm(w.cards_b, w.rate_b)
    return ya, xa, yb, xb


def _coverages(w: World, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ya, xa, yb, xb = _simulate(w, rng)
    truth = w.rate_b - w.rate_a
    zeros_a, zeros_b = np.zeros(w.cards_a), np.zeros(w.cards_b)
    hits = {"card diff": 0, "tx diff": 0, "card rate": 0, "tx rate": 0}
    for i in range(SIMULATIONS):
        # Independent arms, aligned by card: each card has zeros on the other side.
        d = cluster_difference(
            np.concatenate([ya[i], zeros_b]),
            np.concatenate([xa[i], zeros_b]),
            np.concatenate([zeros_a, yb[i]]),
            np.concatenate([zeros_a, xb[i]]),
        )
        assert d.ci95 is not None
        hits["card diff"] += d.ci95[0] <= truth <= d.ci95[1]
        r = cluster_rate(yb[i], xb[i])
        hits["card rate"] += r.ci95[0] <= w.rate_b <= r.ci95[1]
        # Transaction level: every transaction an independent Bernoulli draw.
        ka, na, kb, nb = ya[i].sum(), xa[i].sum(), yb[i].sum(), xb[i].sum()
        pa, pb = ka / na, kb / nb
        se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
        hits["tx diff"] += bool(abs(pb - pa - truth) <= Z95 * se)
        lo, hi = wilson(int(kb), int(nb))
        hits["tx rate"] += lo <= w.rate_b <= hi
    return {k: v / SIMULATIONS for k, v in hits.items()}


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.name)
def test_card_level_interval_covers_the_truth_and_the_transaction_level_one_does_not(
    world: World,
) -> None:
    cov = _coverages(world, seed=20261129)
    print(world.name, cov)  # shown with -s: the figures quoted in docs
    assert 0.93 <= cov["card diff"] <= 0.97, cov
    assert 0.93 <= cov["card rate"] <= 0.97, cov
    # Counting transactions as independent: intervals too narrow, truth missed far too often.
    assert cov["tx diff"] < 0.85, cov
    assert cov["tx rate"] < 0.85, cov


def test_with_one_transaction_per_card_both_levels_agree() -> None:
    """No clustering to correct for: the card-level interval is no wider than it must be."""
    rng = np.random.default_rng(7)
    n = 2000
    y = rng.binomial(1, 0.2, size=n).astype(float)
    x = np.ones(n)
    r = cluster_rate(y, x)
    lo, hi = wilson(int(y.sum()), n)
    assert r.deff == pytest.approx(1.0, abs=0.01)
    assert r.ci95 == (pytest.approx(lo, abs=1e-3), pytest.approx(hi, abs=1e-3))


def test_card_bootstrap_agrees_with_the_linearised_standard_error() -> None:
    w = WORLDS[0]
    rng = np.random.default_rng(11)
    ya, xa, yb, xb = (a[0] for a in _simulate(w, rng))
    za, zb = np.zeros(w.cards_a), np.zeros(w.cards_b)
    args = (
        np.concatenate([ya, zb]),
        np.concatenate([xa, zb]),
        np.concatenate([za, yb]),
        np.concatenate([za, xb]),
    )
    d = cluster_difference(*args)
    boot = bootstrap_difference(*args, n_boot=2000, seed=3)
    assert boot.estimate == pytest.approx(d.difference)
    assert boot.se == pytest.approx(d.se, rel=0.1)
    assert boot.ci95 is not None
    assert d.ci95 is not None
    assert boot.ci95[0] == pytest.approx(d.ci95[0], abs=0.15 * (d.ci95[1] - d.ci95[0]))
    # Seeded: the same resamples, the same interval.
    assert bootstrap_difference(*args, n_boot=2000, seed=3) == boot
    assert bootstrap_difference(*args, n_boot=2000, seed=4) != boot
    rate = cluster_rate(yb, xb)
    b_rate = bootstrap_rate(yb, xb, n_boot=2000, seed=3)
    assert b_rate.se == pytest.approx(rate.se, rel=0.1)
