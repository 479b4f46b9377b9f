"""Metrics of a backtest, per model version and per day, from the records a worker writes.

Input: the scores (``fraud.scores``: one per version that scored a transaction, deciding or
shadow), the decisions, the truth of the labelled file and the label arrivals. The same code
serves the in-process replay and, later, a replay through Kafka.

Optional, the Handbook's protocol (``known_since``): transactions of a card whose fraud was
already known — a fraud label reported before the transaction's day, for a transaction at or
after ``known_since`` — are left out of every metric, and card precision@k leaves out cards found
in an earlier day's top k (always, as the Handbook's rule).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudstream.backtest.run import BacktestRun, Truth
from fraudstream.core import quality
from fraudstream.core.messages import Score

DAY_S = 86400.0


@dataclass(slots=True)
class VersionScores:
    """One version's scores over the evaluated transactions, as arrays."""

    version: str
    ids: list[str]
    score: np.ndarray
    decision: np.ndarray  # "approve" / "review" / "decline"
    role: np.ndarray  # "champion" / "challenger" / "shadow"
    y: np.ndarray
    day: np.ndarray
    card: np.ndarray
    amount: np.ndarray
    currency: np.ndarray
    kind: np.ndarray


@dataclass(slots=True)
class Evaluation:
    by_version: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_day: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    excluded_known_cards: int = 0  # transactions left out by the known-fraud rule
    scores: dict[str, VersionScores] = field(default_factory=dict)


def known_fraud_day(
    truth: Mapping[str, Truth], labels: Sequence[Any], since: float
) -> dict[str, int]:
    """Card → the first day from which its fraud is known (label reported before the day's
    start, for a transaction at or after ``since``)."""
    first: dict[object, float] = {}
    for lab in labels:
        t = truth.get(lab.transaction_id)
        if t is None or not lab.is_fraud or t.ts < since:
            continue
        if lab.reported_at < first.get(t.card_id, math.inf):
            first[t.card_id] = lab.reported_at
    return {str(c): d for c, d in quality.known_defrauded_day(first).items()}


def version_scores(
    scores: Sequence[Score],
    truth: Mapping[str, Truth],
    known: Mapping[str, int] | None = None,
) -> tuple[dict[str, VersionScores], int]:
    """Group scores by version, leaving out transactions of cards already known defrauded."""
    rows: dict[str, list[tuple[Score, Truth]]] = defaultdict(list)
    excluded: set[str] = set()
    for sc in scores:
        t = truth[sc.transaction_id]
        if known is not None:
            k = known.get(t.card_id)
            if k is not None and k <= math.floor(t.ts / DAY_S):
                excluded.add(sc.transaction_id)
                continue
        rows[sc.model_version].append((sc, t))
    out = {}
    for version, pairs in rows.items():
        pairs.sort(key=lambda p: (p[1].ts, p[0].transaction_id))
        out[version] = VersionScores(
            version=version,
            ids=[p[0].transaction_id for p in pairs],
            score=np.array([p[0].score for p in pairs], dtype=np.float64),
            decision=np.array([p[0].decision for p in pairs], dtype=object),
            role=np.array([p[0].role for p in pairs], dtype=object),
            y=np.array([p[1].is_fraud for p in pairs], dtype=bool),
            day=np.array([math.floor(p[1].ts / DAY_S) for p in pairs], dtype=np.int64),
            card=np.array([p[1].card_id for p in pairs], dtype=object),
            amount=np.array([p[1].amount for p in pairs], dtype=np.float64),
            currency=np.array([p[1].currency for p in pairs], dtype=object),
            kind=np.array([p[1].kind for p in pairs], dtype=object),
        )
    return out, len(excluded)


def _money(vs: VersionScores, m: np.ndarray) -> dict[str, dict[str, float]]:
    """Amounts per currency: frauds flagged (review or decline), declined, missed (approved);
    genuine declined and sent to review."""
    out: dict[str, dict[str, float]] = {}
    flagged = vs.decision != "approve"
    declined = vs.decision == "decline"
    for cur in sorted(set(vs.currency[m].tolist())):
        c = m & (vs.currency == cur)
        y = vs.y
        out[cur] = {
            "fraud_total": float(vs.amount[c & y].sum()),
            "fraud_caught": float(vs.amount[c & y & flagged].sum()),
            "fraud_declined": float(vs.amount[c & y & declined].sum()),
            "fraud_missed": float(vs.amount[c & y & ~flagged].sum()),
            "good_declined": float(vs.amount[c & ~y & declined].sum()),
            "good_reviewed": float(vs.amount[c & ~y & (vs.decision == "review")].sum()),
        }
    return out


def metrics(vs: VersionScores, m: np.ndarray | None = None, card_k: int = 100) -> dict[str, Any]:
    """AUC, average precision, card precision@k, decisions and money over rows ``m``."""
    if m is None:
        m = np.ones(len(vs.ids), dtype=bool)
    y, s = vs.y[m], vs.score[m]
    dec = vs.decision[m]
    out: dict[str, Any] = {
        "transactions": int(m.sum()),
        "frauds": int(y.sum()),
        "auc_roc": quality.auc_roc(y, s),
        "average_precision": quality.average_precision(y, s),
    }
    cp = quality.card_precision_at_k(vs.day[m], vs.card[m], y, s, card_k)
    out[f"card_precision_at_{card_k}"] = cp.mean
    counts = {k: int((dec == k).sum()) for k in ("approve", "review", "decline")}
    flagged = dec != "approve"
    declined = dec == "decline"
    out["decisions"] = counts
    out["flagged"] = {
        "precision": float((flagged & y).sum() / flagged.sum()) if flagged.any() else math.nan,
        "recall": float((flagged & y).sum() / y.sum()) if y.any() else math.nan,
    }
    out["declined"] = {
        "precision": float((declined & y).sum() / declined.sum()) if declined.any() else math.nan,
        "recall": float((declined & y).sum() / y.sum()) if y.any() else math.nan,
    }
    out["money"] = _money(vs, m)
    return out


def evaluate(
    run: BacktestRun, *, known_since: float | None = None, card_k: int = 100
) -> Evaluation:
    known = None if known_since is None else known_fraud_day(run.truth, run.labels, known_since)
    per_version, excluded = version_scores(run.scores, run.truth, known)
    ev = Evaluation(excluded_known_cards=excluded, scores=per_version)
    for version, vs in sorted(per_version.items()):
        ev.by_version[version] = metrics(vs, card_k=card_k)
        # A day's card precision is the one the whole period's computation gave it: cards found
        # on an earlier day are left out (computed on the day alone, they would count again).
        cp = quality.card_precision_at_k(vs.day, vs.card, vs.y, vs.score, card_k)
        cp_of = dict(zip(cp.days, cp.per_day, strict=True))
        days = []
        for d in np.unique(vs.day).tolist():
            row = metrics(vs, vs.day == d, card_k)
            row[f"card_precision_at_{card_k}"] = cp_of[d]
            row["day"] = quality_day(d)
            days.append(row)
        ev.by_day[version] = days
        kinds = []
        for k in sorted(set(vs.kind.tolist()) - {""}):
            # Each kind of fraud against every genuine transaction (the breakdown).
            m = (vs.kind == k) | ~vs.y
            kinds.append(
                {
                    "kind": k,
                    "frauds": int((vs.kind == k).sum()),
                    "auc_roc": quality.auc_roc(vs.y[m], vs.score[m]),
                    "recall_flagged": float(
                        ((vs.kind == k) & (vs.decision != "approve")).sum()
                        / max(int((vs.kind == k).sum()), 1)
                    ),
                }
            )
        ev.by_kind[version] = kinds
    return ev


def quality_day(day: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()
