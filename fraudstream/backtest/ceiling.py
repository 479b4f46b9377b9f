"""How high card precision@k can go when some frauds cannot be known in time.

A compromised terminal (the Handbook's fraud scenario 2) turns every transaction made there into
a fraud for 28 days, whatever the card, the amount or the hour. Such a fraud looks exactly like a
genuine transaction until a fraud at the same terminal is labelled, and labels arrive days after
their transaction (7 in the Handbook's protocol). So a fraud of a *merchant-driven* kind is
**knowable** only when a fraud label of its merchant was reported before the transaction's entity
cutoff (:func:`fraudstream.core.entity.cutoff`, the rule the worker's features follow), for a
transaction inside the longest window of the merchant's label features (30 days). A fraud of any
other kind counts as knowable: the ceiling is generous to the model there.

:func:`ceiling` then ranks the knowable frauds first
(:func:`fraudstream.core.quality.card_precision_ceiling`): the model's own order for the rest,
and many random orders (what luck alone adds). docs/model-quality.md, "How high card
precision@100 can go".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from fraudstream.backtest.evaluate import VersionScores
from fraudstream.core import entity, quality
from fraudstream.core.messages import Transaction
from fraudstream.core.replay import LabelEvent

#: m_frauds_30d: the longest window of the merchant's label features (core/entity.py).
MERCHANT_WINDOW_S = 30 * 86400.0


class Place(NamedTuple):
    """Where and when a transaction happened: all the ceiling needs of it."""

    merchant_id: str
    ts: float


def places(txs: Iterable[Transaction]) -> dict[str, Place]:
    return {tx.transaction_id: Place(tx.merchant_id, float(tx.ts)) for tx in txs}


def knowable(
    vs: VersionScores,
    txs: Mapping[str, Place],
    labels: Iterable[LabelEvent],
    merchant_kinds: Collection[str],
) -> np.ndarray:
    """Per row of ``vs``: a fraud that a model obeying the point-in-time rule can know of (see
    the module docstring); False for genuine rows. ``txs``: transaction id → its place, for
    every evaluated and every labelled transaction. A label counts as given (the Handbook has
    no reversals)."""
    reports: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for lab in labels:
        tx = txs.get(lab.transaction_id) if lab.is_fraud else None
        if tx is not None:
            reports[tx.merchant_id].append((lab.reported_at, tx.ts))
    out = np.zeros(len(vs.ids), dtype=bool)
    for i, (tid, kind, fraud) in enumerate(zip(vs.ids, vs.kind, vs.y, strict=True)):
        if not fraud:
            continue
        if kind not in merchant_kinds:
            out[i] = True
            continue
        tx = txs[tid]
        cut = entity.cutoff(tx.ts)
        out[i] = any(
            r < cut and t >= cut - MERCHANT_WINDOW_S for r, t in reports.get(tx.merchant_id, ())
        )
    return out


def ceiling(
    vs: VersionScores, known: np.ndarray, k: int, target: float, draws: int = 200
) -> dict[str, Any]:
    """Card precision@k with every knowable fraud ranked first: the rest in the model's order,
    and in ``draws`` random orders (mean, range, share of draws reaching ``target``)."""
    own = quality.card_precision_ceiling(vs.day, vs.card, vs.y, vs.score, known, k)
    luck = quality.card_precision_ceiling_by_chance(vs.day, vs.card, vs.y, known, k, draws)
    return {
        "frauds": int(vs.y.sum()),
        "knowable": int(known.sum()),
        "model_order": own.mean,
        "random_mean": float(luck.mean()),
        "random_min": float(luck.min()),
        "random_max": float(luck.max()),
        "random_reaching_target": float((luck >= target - 1e-9).mean()),
        "draws": draws,
    }
