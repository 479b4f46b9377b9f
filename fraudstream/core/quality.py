"""Model-quality metrics, by hand (no sklearn at runtime): AUC ROC, average precision, precision
at k, and card precision at k by the Fraud Detection Handbook's rule. Pure numpy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

DAY_S = 86400.0


def auc_roc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). NaN without both classes."""
    y = np.asarray(y, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = np.asarray(s)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def pr_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at every distinct score, highest threshold first."""
    y = np.asarray(y, dtype=bool)
    pos = int(y.sum())
    order = np.argsort(-np.asarray(s), kind="mergesort")
    s_sorted = np.asarray(s)[order]
    tp = np.cumsum(y[order])
    # Evaluate only at the last index of each run of equal scores (ties share one threshold).
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1] if len(s) else np.zeros(0)
    last = last.astype(np.intp)
    tp_at = tp[last] if len(s) else np.zeros(0)
    precision = tp_at / (last + 1)
    recall = tp_at / pos if pos else np.zeros(len(last))
    return precision, recall, s_sorted[last] if len(s) else np.zeros(0)


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision: Σ (recall_k − recall_{k−1}) · precision_k over distinct thresholds."""
    if int(np.asarray(y, dtype=bool).sum()) == 0:
        return float("nan")
    precision, recall, _ = pr_curve(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_k(y: np.ndarray, s: np.ndarray, k: int) -> float:
    if k <= 0 or len(s) == 0:
        return float("nan")
    top = np.argsort(-np.asarray(s), kind="mergesort")[:k]
    return float(np.asarray(y, dtype=bool)[top].mean())


def day_index(ts: np.ndarray) -> np.ndarray:
    """UTC day of each POSIX time."""
    return np.floor(np.asarray(ts, dtype=np.float64) / DAY_S).astype(np.int64)


@dataclass(frozen=True, slots=True)
class CardPrecision:
    mean: float
    per_day: tuple[float, ...]
    days: tuple[int, ...]
    defrauded_cards: tuple[int, ...]  # cards with a fraud that day, after the exclusions


def card_precision_at_k(
    day: np.ndarray, card: np.ndarray, y: np.ndarray, s: np.ndarray, k: int
) -> CardPrecision:
    """The Handbook's card precision@k: for each day (in order), rank cards by their highest
    score that day, take the top ``k``, precision = share of them with a fraud that day (over
    ``k``, even when fewer cards were active); cards found defrauded in an earlier day's top k
    are left out of later days; the mean over the days. Leaving out cards whose fraud was
    already known is the caller's filter (:func:`known_defrauded_day`)."""
    day = np.asarray(day)
    card = np.asarray(card)
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    detected: set[object] = set()
    per_day: list[float] = []
    days: list[int] = []
    defrauded: list[int] = []
    for d in np.unique(day).tolist():
        m = day == d
        cards, inv = np.unique(card[m], return_inverse=True)
        keep = np.fromiter((c not in detected for c in cards.tolist()), bool, len(cards))
        best = np.full(len(cards), -np.inf)
        np.maximum.at(best, inv, s[m])
        fraud = np.zeros(len(cards), dtype=bool)
        np.logical_or.at(fraud, inv, y[m])
        idx = np.flatnonzero(keep)
        # Highest score first; ties by card id (deterministic).
        top = idx[np.lexsort((cards[idx], -best[idx]))][:k]
        hits = cards[top][fraud[top]]
        per_day.append(len(hits) / k)
        days.append(int(d))
        defrauded.append(int(fraud[idx].sum()))
        detected.update(hits.tolist())
    mean = float(np.mean(per_day)) if per_day else math.nan
    return CardPrecision(mean, tuple(per_day), tuple(days), tuple(defrauded))


def card_precision_ceiling(
    day: np.ndarray,
    card: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    knowable: np.ndarray,
    k: int,
) -> CardPrecision:
    """Card precision@k of an oracle that ranks every ``knowable`` fraud above everything else
    and the rest as ``s`` does: the most a model can reach when the other frauds look exactly
    like genuine transactions to it (nothing it may know yet tells them apart). ``s`` in [0, 1].
    """
    first = np.asarray(knowable, dtype=bool) & np.asarray(y, dtype=bool)
    return card_precision_at_k(day, card, y, np.where(first, 2.0, 0.0) + np.asarray(s), k)


def card_precision_ceiling_by_chance(
    day: np.ndarray,
    card: np.ndarray,
    y: np.ndarray,
    knowable: np.ndarray,
    k: int,
    draws: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """:func:`card_precision_ceiling` with the rest in a random order, ``draws`` times (seeded):
    what luck alone adds among transactions that look alike."""
    rng = np.random.default_rng(seed)
    n = len(np.asarray(y))
    means = [
        card_precision_ceiling(day, card, y, rng.random(n), knowable, k).mean for _ in range(draws)
    ]
    return np.array(means)


def known_defrauded_day(fraud_reports: Mapping[object, float]) -> dict[object, int]:
    """Card → the first day from whose start its fraud is known, from the earliest fraud label
    reported per card (``fraud_reports``: card → reported_at). A card whose fraud was reported
    during day d is known from day d + 1."""
    return {c: math.floor(r / DAY_S) + 1 for c, r in fraud_reports.items()}


def score_at_rate(s: np.ndarray, rate: float) -> float:
    """The score at which a share ``rate`` of rows has a score ≥ it (the k-th largest)."""
    if len(s) == 0:
        return 1.0
    k = max(1, math.ceil(rate * len(s)))
    return float(np.sort(s)[::-1][k - 1])


def at_threshold(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, float]:
    y = np.asarray(y, dtype=bool)
    flagged = s >= thr
    tp = int((flagged & y).sum())
    n_flag = int(flagged.sum())
    pos = int(y.sum())
    return {
        "threshold": thr,
        "flag_rate": n_flag / len(s) if len(s) else 0.0,
        "precision": tp / n_flag if n_flag else float("nan"),
        "recall": tp / pos if pos else float("nan"),
    }
