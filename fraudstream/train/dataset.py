"""A training (or evaluation) data set: history replayed point-in-time into feature rows.

Rows come from :func:`fraudstream.core.replay.replay` — the worker's own ``features.step`` with
every label applied at the moment it arrived — so training sees exactly what the live worker
sees. The target ``y`` is the label the data gives for each transaction (the truth as known when
the model is trained); *when* labels became known only drives the label features.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudstream.core import quality
from fraudstream.core.messages import Transaction
from fraudstream.core.replay import Entities, LabelEvent, delayed_labels, replay

LabelledTx = tuple[Transaction, bool] | tuple[Transaction, bool, str | None]
DAY_S = 86400.0
TOP_K_SHARE = 0.005
CARD_K = 100


@dataclass(slots=True)
class Dataset:
    """Feature rows in event-time order with what evaluation needs beside them."""

    X: np.ndarray  # float32, (n, N_FEATURES)
    y: np.ndarray  # bool
    ts: np.ndarray  # float64 event times, ascending
    card: np.ndarray  # card ids (str objects)
    ids: list[str]
    kind: np.ndarray  # fraud kind or "" (simulator and Handbook scenarios; "" when unknown)
    labels: list[LabelEvent]  # the label arrivals used by the replay
    entities: Entities  # entity state at the end of the history

    def __len__(self) -> int:
        return len(self.ids)

    def prefix(self, n: int) -> Dataset:
        """The first ``n`` rows: the same as replaying only them, since a row depends only on
        its past (the label arrivals are kept: later ones never reach earlier rows)."""
        return Dataset(
            self.X[:n], self.y[:n], self.ts[:n], self.card[:n], self.ids[:n], self.kind[:n],
            self.labels, self.entities,
        )  # fmt: skip

    def index_at(self, t: float) -> int:
        """First row with event time >= t."""
        return int(np.searchsorted(self.ts, t, side="left"))


def label_events(
    rows: Sequence[LabelledTx],
    labels: Iterable[LabelEvent] | None,
    label_delay_days: float | None,
) -> list[LabelEvent]:
    """The label arrivals: given ones, or every label ``label_delay_days`` after its transaction.
    One of the two is required: a label's arrival time is what makes training point-in-time."""
    if labels is not None:
        if label_delay_days is not None:
            raise ValueError("give label arrival times or a label delay, not both")
        return list(labels)
    if label_delay_days is None:
        raise ValueError(
            "when did the labels become known? give a label delay in days (e.g. 7, the "
            "Handbook's protocol) or a label arrival-time column; features never see a label "
            "before it was reported"
        )
    return delayed_labels(((r[0], bool(r[1])) for r in rows), label_delay_days)


def build(
    rows: Sequence[LabelledTx],
    labels: Iterable[LabelEvent] | None = None,
    *,
    label_delay_days: float | None = None,
) -> Dataset:
    """Replay ``rows`` (transaction, label[, kind]) with the label arrivals into a Dataset."""
    events = label_events(rows, labels, label_delay_days)
    truth = {r[0].transaction_id: (bool(r[1]), (r[2] if len(r) > 2 else None) or "") for r in rows}
    if len(truth) != len(rows):
        raise ValueError("transaction_id values must be unique in the training data")
    entities = Entities()
    X, ids = replay((r[0] for r in rows), events, entities=entities, dtype=np.float32)
    by_id = {r[0].transaction_id: r[0] for r in rows}
    n = len(ids)
    y = np.fromiter((truth[i][0] for i in ids), dtype=bool, count=n)
    ts = np.fromiter((by_id[i].ts for i in ids), dtype=np.float64, count=n)
    card = np.array([by_id[i].card_id for i in ids], dtype=object)
    kind = np.array([truth[i][1] for i in ids], dtype=object)
    return Dataset(X, y, ts, card, ids, kind, events, entities)


def known_cards(labels: Sequence[LabelEvent], data: Dataset, since: float) -> dict[object, int]:
    """Card → first day from which its fraud is known (a fraud label reported before the day's
    start, for a transaction at or after ``since``)."""
    card_of = dict(zip(data.ids, data.card.tolist(), strict=True))
    ts_of = dict(zip(data.ids, data.ts.tolist(), strict=True))
    first: dict[object, float] = {}
    for lab in labels:
        if not lab.is_fraud or lab.transaction_id not in card_of:
            continue
        if ts_of[lab.transaction_id] < since:
            continue
        c = card_of[lab.transaction_id]
        if lab.reported_at < first.get(c, math.inf):
            first[c] = lab.reported_at
    return quality.known_defrauded_day(first)


def evaluate(
    y: np.ndarray,
    s: np.ndarray,
    *,
    day: np.ndarray | None = None,
    card: np.ndarray | None = None,
    card_k: int = CARD_K,
) -> dict[str, Any]:
    """AUC, average precision, precision in the top 0.5 % and (with days and cards) the card
    precision@k by the Handbook's rule (detected cards left out of later days)."""
    y = np.asarray(y, dtype=bool)
    k = max(1, math.ceil(TOP_K_SHARE * len(s)))
    out: dict[str, Any] = {
        "rows": len(s),
        "frauds": int(y.sum()),
        "auc_roc": quality.auc_roc(y, s),
        "average_precision": quality.average_precision(y, s),
        "precision_at_k": quality.precision_at_k(y, s, k),
        "k": k,
    }
    if day is not None and card is not None and len(s):
        cp = quality.card_precision_at_k(day, card, y, s, card_k)
        out[f"card_precision_at_{card_k}"] = cp.mean
    return out
