"""Statistics for comparing model versions on labelled outcomes.

Whole cards are assigned to a variant (``core.routing``), and a card's transactions share its
owner, its fraud episode and its model: they are not independent. So rates are estimated as
*ratios of per-card sums* (``y_c / x_c`` summed over cards, e.g. caught frauds over frauds) with a
cluster-robust (card-level) variance, and differences between variants likewise; a card-level
bootstrap checks the same numbers by resampling whole cards. The transaction-level tools at the
end (Wilson, the two-proportion z-test, McNemar) are right only when every card has one
transaction; ``tests/unit/test_stats_coverage.py`` shows how far off they are otherwise.

Pure: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

Z95 = 1.959963984540054  # the two-sided 95 % normal quantile


def _normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and behaves for k near 0 or n.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k == 0 or k == n the bound is exactly 0 or 1; float rounding would miss it by 1 ulp.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def two_proportion_z_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) for H0: p1 == p2, pooled standard error; (0, 1) when undefined."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, _normal_two_sided_p(z)


def mcnemar(b: int, c: int) -> tuple[float, float]:
    """McNemar's test on the discordant pairs b and c: (statistic, two-sided p).

    Exact binomial when b + c < 25 (statistic = min(b, c)); otherwise chi-square with continuity
    correction (statistic = (|b - c| - 1)^2 / (b + c), 1 degree of freedom).
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 0.0, 1.0
    if n < 25:
        low = min(b, c)
        tail = sum(math.comb(n, i) for i in range(low + 1)) / 2.0**n
        return float(low), min(1.0, 2.0 * tail)
    stat = (abs(b - c) - 1) ** 2 / n
    # The chi-square(1) survival function is the two-sided normal tail at sqrt(x).
    return stat, math.erfc(math.sqrt(stat / 2.0))


def min_samples_note(
    n1: int, n2: int, k1: int, k2: int, names: tuple[str, str] = ("first", "second")
) -> str | None:
    """A human warning when the samples are too small for the tests above to mean much."""
    problems = []
    for name, n, k in ((names[0], n1, k1), (names[1], n2, k2)):
        if n < 30:
            problems.append(f"{name} has {n} observations (fewer than 30)")
        elif min(k, n - k) < 5:
            problems.append(f"{name} has only {min(k, n - k)} in one cell (fewer than 5)")
    if not problems:
        return None
    return "too few to say: " + "; ".join(problems)


# --------------------------------------------------------------------------------------------
# Card-level (cluster) estimates

Array = npt.NDArray[np.float64]
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class ClusterRate:
    """A ratio of per-card sums, e.g. recall = caught frauds / frauds, summed over cards.

    ``se`` is the cluster-robust (linearised, CR1) standard error; ``ci95`` a Wilson interval on
    the effective sample size (n / design effect), which stays inside [0, 1]; ``deff`` how much
    wider the card-level variance is than if the units were independent (counts only).
    """

    value: float | None
    numerator: float
    denominator: float
    cards: int  # cards with a non-zero denominator
    se: float | None
    ci95: tuple[float, float]
    deff: float | None


@dataclass(frozen=True, slots=True)
class ClusterDifference:
    """``b - a`` of two ratios measured on cards (a card may be in one or both)."""

    a: float | None
    b: float | None
    difference: float | None
    se: float | None
    ci95: tuple[float, float] | None
    z: float | None
    p_value: float
    cards: int


def _as_arrays(*xs: npt.ArrayLike) -> list[Array]:
    out = [np.asarray(x, dtype=np.float64) for x in xs]
    shape = out[0].shape
    if any(a.shape != shape or a.ndim != 1 for a in out):
        raise ValueError("per-card arrays must be one-dimensional and of the same length")
    return out


def _wilson_eff(p: float, n_eff: float, z: float = Z95) -> tuple[float, float]:
    z2 = z * z
    denom = 1.0 + z2 / n_eff
    centre = (p + z2 / (2 * n_eff)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n_eff + z2 / (4 * n_eff * n_eff)) / denom
    low = 0.0 if p <= 0.0 else max(0.0, centre - half)  # exact at the edges, as wilson()
    high = 1.0 if p >= 1.0 else min(1.0, centre + half)
    return low, high


def cluster_rate(y: npt.ArrayLike, x: npt.ArrayLike, *, counts: bool = True) -> ClusterRate:
    """Ratio ``sum(y) / sum(x)`` over cards, with its card-level standard error and interval.

    ``y`` and ``x`` hold one value per card (e.g. per card: frauds caught, frauds), with
    ``0 <= y <= x``. ``counts`` says they are counts of transactions (then ``deff`` is given);
    money ratios (amount caught / fraud amount) pass ``counts=False``.
    """
    ya, xa = _as_arrays(y, x)
    if np.any(ya < 0) or np.any(ya > xa + 1e-9 * np.maximum(xa, 1.0)):
        raise ValueError("need 0 <= y <= x for every card")
    used = xa > 0
    g = int(used.sum())
    num, den = float(ya.sum()), float(xa.sum())
    if g == 0 or den <= 0:
        return ClusterRate(None, num, den, 0, None, (0.0, 1.0), None)
    r = num / den
    if g == 1:
        return ClusterRate(r, num, den, 1, None, (0.0, 1.0), None)
    resid = (ya[used] - r * xa[used]) / den
    var = g / (g - 1) * float(resid @ resid)
    binom = r * (1 - r)
    # Effective sample size: as many independent units as carry this variance; at a rate of
    # exactly 0 or 1 the variance is 0 and each card counts as one unit (the honest minimum).
    n_eff = binom / var if var > 0 and binom > 0 else float(g)
    if counts:
        n_eff = min(n_eff, den)
    deff = (var / (binom / den)) if counts and binom > 0 else None
    return ClusterRate(r, num, den, g, math.sqrt(var), _wilson_eff(r, n_eff), deff)


def cluster_difference(
    ya: npt.ArrayLike, xa: npt.ArrayLike, yb: npt.ArrayLike, xb: npt.ArrayLike
) -> ClusterDifference:
    """``rate_b - rate_a`` with a card-level standard error, 95 % interval and two-sided p.

    The four arrays are aligned by card. Independent groups (champion vs challenger: different
    cards) have zeros on the other side; paired measurements (a deciding model and its shadow on
    the same transactions) have both. The linearised residuals of both ratios are differenced
    per card, so either case — or a mix, when a routing change moved cards — is handled alike.
    """
    ya_, xa_, yb_, xb_ = _as_arrays(ya, xa, yb, xb)
    xsum_a, xsum_b = float(xa_.sum()), float(xb_.sum())
    used = (xa_ > 0) | (xb_ > 0)
    g = int(used.sum())
    ra = float(ya_.sum()) / xsum_a if xsum_a > 0 else None
    rb = float(yb_.sum()) / xsum_b if xsum_b > 0 else None
    if ra is None or rb is None or g < 2:
        return ClusterDifference(ra, rb, None, None, None, None, 1.0, g)
    e = (yb_[used] - rb * xb_[used]) / xsum_b - (ya_[used] - ra * xa_[used]) / xsum_a
    se = math.sqrt(g / (g - 1) * float(e @ e))
    diff = rb - ra
    if se == 0.0:
        # Every card at 0 % or 100 % on both sides: no spread to measure. Count each card as
        # one unit and add one success and one failure per side (Agresti-Caffo), rather than
        # claim certainty from a handful of cards.
        ga, gb = int((xa_ > 0).sum()), int((xb_ > 0).sum())
        pa, pb = (ga * ra + 1) / (ga + 2), (gb * rb + 1) / (gb + 2)
        se = math.sqrt(pa * (1 - pa) / (ga + 2) + pb * (1 - pb) / (gb + 2))
    z = diff / se
    # Both rates lie in [0, 1], so their difference in [-1, 1]; a wider Wald bound says nothing.
    ci = (max(-1.0, diff - Z95 * se), min(1.0, diff + Z95 * se))
    return ClusterDifference(ra, rb, diff, se, ci, z, _normal_two_sided_p(z), g)


# --------------------------------------------------------------------------------------------
# Card-level bootstrap


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Percentile interval and standard error of a statistic over card resamples."""

    estimate: float | None
    se: float | None
    ci95: tuple[float, float] | None
    resamples: int
    seed: int


def _weight_blocks(
    rng: np.random.Generator, g: int, n_boot: int, max_cells: int = 4_000_000
) -> Iterator[Array]:
    """Multinomial card weights (how often each card is drawn), ``n_boot`` rows in blocks."""
    block = max(1, min(n_boot, max_cells // max(g, 1)))
    done = 0
    pvals = np.full(g, 1.0 / g)
    while done < n_boot:
        k = min(block, n_boot - done)
        yield rng.multinomial(g, pvals, size=k).astype(np.float64)
        done += k


def _percentile_summary(estimate: float | None, draws: Array, n_boot: int, seed: int) -> Bootstrap:
    draws = draws[np.isfinite(draws)]
    if estimate is None or draws.size < 2:
        return Bootstrap(estimate, None, None, n_boot, seed)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return Bootstrap(estimate, float(draws.std(ddof=1)), (float(lo), float(hi)), n_boot, seed)


def bootstrap_difference(
    ya: npt.ArrayLike,
    xa: npt.ArrayLike,
    yb: npt.ArrayLike,
    xb: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Bootstrap:
    """``rate_b - rate_a`` over ``n_boot`` resamples of whole cards (seeded: reproducible).

    Arrays aligned by card as in :func:`cluster_difference`; a card is drawn with all its
    transactions, on both sides at once when it has both (paired).
    """
    ya_, xa_, yb_, xb_ = _as_arrays(ya, xa, yb, xb)
    used = (xa_ > 0) | (xb_ > 0)
    ya_, xa_, yb_, xb_ = ya_[used], xa_[used], yb_[used], xb_[used]
    g = ya_.size
    estimate = None
    if xa_.sum() > 0 and xb_.sum() > 0:
        estimate = float(yb_.sum() / xb_.sum() - ya_.sum() / xa_.sum())
    if estimate is None or g < 2:
        return Bootstrap(estimate, None, None, n_boot, seed)
    rng = np.random.default_rng(seed)
    parts = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in _weight_blocks(rng, g, n_boot):
            parts.append(w @ yb_ / (w @ xb_) - w @ ya_ / (w @ xa_))
    return _percentile_summary(estimate, np.concatenate(parts), n_boot, seed)


def bootstrap_rate(
    y: npt.ArrayLike, x: npt.ArrayLike, *, n_boot: int = 1000, seed: int = 0
) -> Bootstrap:
    """``sum(y) / sum(x)`` over ``n_boot`` resamples of whole cards (seeded: reproducible)."""
    ya, xa = _as_arrays(y, x)
    used = xa > 0
    ya, xa = ya[used], xa[used]
    if ya.size == 0:
        return Bootstrap(None, None, None, n_boot, seed)
    estimate = float(ya.sum() / xa.sum())
    if ya.size < 2:
        return Bootstrap(estimate, None, None, n_boot, seed)
    rng = np.random.default_rng(seed)
    parts = [w @ ya / (w @ xa) for w in _weight_blocks(rng, ya.size, n_boot)]
    return _percentile_summary(estimate, np.concatenate(parts), n_boot, seed)


# --------------------------------------------------------------------------------------------
# Power


def minimum_detectable_difference(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at ``alpha`` detects with ``power``, given
    the standard error its estimate has: ``(z(1 - alpha/2) + z(power)) * se``."""
    return (_NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)) * se


def days_to_detect(
    difference: float,
    se: float,
    days_observed: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float | None:
    """Days of traffic until ``difference`` is detectable, from the ``se`` seen over
    ``days_observed`` days. Variances shrink as 1/days when each day brings new cards at the
    same rate and routing share (cards that keep coming back make it slower). None if undefined.
    """
    if difference == 0 or se <= 0 or days_observed <= 0:
        return None
    mdd = minimum_detectable_difference(se, alpha=alpha, power=power)
    return days_observed * (mdd / abs(difference)) ** 2
