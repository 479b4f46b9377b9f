"""Small, dependency-free statistics for comparing model versions on labelled outcomes."""

from __future__ import annotations

import math

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
