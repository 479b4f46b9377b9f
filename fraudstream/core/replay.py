"""The offline replay: history and its labels through the worker's own feature code, each label
applied at the moment it arrived (the design note's "Offline replay").

One loop over a merged timeline: transactions at their event time, labels at their
``reported_at``. Transactions are taken in groups that share a cutoff
(:func:`fraudstream.core.entity.cutoff`); before a group, every label reported up to its first
transaction is absorbed; after it, its transactions are absorbed into their merchants. Entity
features only see events before the cutoff (at least five minutes before the transaction), so
absorbing events as they come is exactly what the live topology does, and being ahead of the
cutoff changes nothing.

Used by the trainer (:func:`replay`) and by ``fraudstream backtest`` (:func:`timeline` around the
engine). Pure: no Kafka, no files.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudstream.core import entity, features
from fraudstream.core.entity import EntityKey, EntityState
from fraudstream.core.messages import Transaction

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """One label as it arrived: ``reported_at`` in POSIX seconds."""

    transaction_id: str
    reported_at: float
    is_fraud: bool


def delayed_labels(
    labelled: Iterable[tuple[Transaction, bool]], delay_days: float
) -> list[LabelEvent]:
    """Every transaction's label, known ``delay_days`` after the transaction (a file without an
    arrival time: the Handbook's protocol is a 7-day delay)."""
    if not delay_days >= 0.0:
        raise ValueError(f"label delay must be a number of days >= 0, got {delay_days!r}")
    delay = delay_days * DAY_S
    return [LabelEvent(tx.transaction_id, tx.ts + delay, bool(y)) for tx, y in labelled]


@dataclass(slots=True)
class Entities:
    """The offline entity store: states by key, fed by the timeline; :meth:`get` is the lookup
    that :func:`fraudstream.core.features.step` reads."""

    states: dict[EntityKey, EntityState] = field(default_factory=dict)

    def get(self, key: EntityKey) -> EntityState | None:
        return self.states.get(key)

    def _state(self, key: EntityKey) -> EntityState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = EntityState()
        return st

    def absorb_tx(self, tx: Transaction) -> None:
        self._state(entity.merchant_key(tx.merchant_id)).absorb_tx(
            tx.ts, features.cents_of(tx.amount)
        )

    def absorb_label(self, tx: Transaction, reported_at: float, is_fraud: bool) -> None:
        cents = features.cents_of(tx.amount)
        for key in (entity.merchant_key(tx.merchant_id), entity.card_key(tx.card_id)):
            self._state(key).absorb_label(tx.transaction_id, tx.ts, cents, reported_at, is_fraud)


@dataclass(slots=True)
class Timeline:
    """Transactions in event-time order and the labels that can be joined to them."""

    txs: list[Transaction]
    labels: list[tuple[float, str, bool]]  # (reported_at, transaction_id, is_fraud), sorted
    unknown_labels: int = 0  # labels of transactions not in the history (dropped)
    early_labels: int = 0  # labels reported before their transaction (taken at its time)

    @classmethod
    def build(cls, txs: Iterable[Transaction], labels: Iterable[LabelEvent] = ()) -> Timeline:
        """Sort by (event time, id); join labels to their transactions by id."""
        ordered = sorted(txs, key=lambda t: (t.ts, t.transaction_id))
        ts_of = {t.transaction_id: t.ts for t in ordered}
        if len(ts_of) != len(ordered):
            raise ValueError("transaction_id values must be unique in a replayed history")
        out: list[tuple[float, str, bool]] = []
        unknown = early = 0
        for lab in labels:
            ts = ts_of.get(lab.transaction_id)
            if ts is None:
                unknown += 1
                continue
            at = float(lab.reported_at)
            if at < ts:  # nobody can report a transaction before it happened
                early += 1
                at = ts
            out.append((at, lab.transaction_id, bool(lab.is_fraud)))
        out.sort()
        return cls(ordered, out, unknown, early)

    def groups(self, entities: Entities) -> Iterator[Sequence[Transaction]]:
        """Groups of transactions sharing a cutoff, in order, with ``entities`` kept up to date:
        labels reported up to a group's first transaction are absorbed before it is yielded, the
        group's transactions after the caller resumes. Labels after the last transaction are
        absorbed at the end (the state as of the end of the history)."""
        txs, labels = self.txs, self.labels
        by_id = {t.transaction_id: t for t in txs}
        n, j = len(txs), 0
        i = 0
        while i < n:
            first = txs[i]
            cut = entity.cutoff(first.ts)
            k = i + 1
            nxt = cut + entity.BUCKET_S + entity.SLACK_S  # the first time of the next cutoff
            while k < n and txs[k].ts < nxt:
                k += 1
            while j < len(labels) and labels[j][0] <= first.ts:
                at, tx_id, is_fraud = labels[j]
                entities.absorb_label(by_id[tx_id], at, is_fraud)
                j += 1
            group = txs[i:k]
            yield group
            for tx in group:
                if features.valid_amount(tx.amount):
                    entities.absorb_tx(tx)
            i = k
        for at, tx_id, is_fraud in labels[j:]:
            entities.absorb_label(by_id[tx_id], at, is_fraud)


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a long replay. Its passes over millions of live
    objects (transactions, states, labels) took half the CPU of a 1.3 M-row replay; the replay
    makes no reference cycles, so reference counting frees everything it drops."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def replay(
    transactions: Iterable[Transaction],
    labels: Iterable[LabelEvent] = (),
    *,
    with_entities: bool = True,
    entities: Entities | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> tuple[np.ndarray, list[str]]:
    """The training path: features of every transaction in event-time order.

    Returns the matrix (rows in (event time, id) order; ``dtype`` float32 is what the models
    read, float64 keeps the rows exact) and the transaction ids. ``entities`` receives the entity
    state (a fresh store by default). ``with_entities=False`` answers "nothing known" for every
    entity (a worker without the entity topology sees exactly that).
    """
    tl = Timeline.build(transactions, labels)
    X = np.empty((len(tl.txs), features.N_FEATURES), dtype=dtype)
    states: dict[str, features.CardState] = {}
    store = Entities() if entities is None else entities
    lookup = store.get if with_entities else entity.nothing_known
    i = 0
    with paused_gc():
        for group in tl.groups(store):
            for tx in group:
                states[tx.card_id], X[i] = features.step(states.get(tx.card_id), tx, lookup)
                i += 1
    return X, [t.transaction_id for t in tl.txs]
