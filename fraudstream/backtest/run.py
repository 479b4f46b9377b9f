"""Replay a labelled history through the worker's engine, in process, no broker.

The path a live worker takes for every transaction — ``engine.process_batch``: card record,
dedup, ``features.step`` with the entity lookup, routing, every routed model, thresholds,
reasons — fed by the offline timeline (``core.replay``): transactions in event-time order,
labels absorbed into merchant and card state at the moment they arrived. What comes out is the
same records the worker writes to ``fraud.decisions`` and ``fraud.scores``, so the metrics code
(:mod:`fraudstream.backtest.evaluate`) takes them from here or, with ``--through-kafka`` (to come
with the live entity topology), from the topics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fraudstream.core import engine
from fraudstream.core.engine import CardRecord, Serving
from fraudstream.core.messages import Decision, Score, Transaction
from fraudstream.core.replay import Entities, LabelEvent, Timeline, paused_gc

BATCH = 512
DEDUP_WINDOW_S = 86400.0


@dataclass(frozen=True, slots=True)
class Truth:
    """What the labelled file says about one transaction (for evaluation only)."""

    ts: float
    card_id: str
    amount: float
    currency: str
    is_fraud: bool
    kind: str  # fraud kind ("" when genuine or unknown)


@dataclass(slots=True)
class BacktestRun:
    """Decisions and scores as the worker writes them, with the truth beside them."""

    decisions: dict[str, Decision] = field(default_factory=dict)  # transaction_id -> decision
    scores: list[Score] = field(default_factory=list)  # one per version that scored a tx
    truth: dict[str, Truth] = field(default_factory=dict)
    labels: list[LabelEvent] = field(default_factory=list)  # label arrivals replayed
    rejected: dict[str, str] = field(default_factory=dict)  # transaction_id -> reason
    unknown_labels: int = 0
    early_labels: int = 0


def run_in_process(
    rows: Sequence[tuple[Transaction, bool] | tuple[Transaction, bool, str | None]],
    labels: Sequence[LabelEvent],
    serving: Serving,
    *,
    keep: Callable[[Transaction], bool] = lambda _tx: True,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestRun:
    """Replay ``rows`` (transaction, is_fraud[, kind]) with label arrivals ``labels`` through
    the engine with ``serving``; decisions and scores of transactions ``keep`` accepts are kept
    (every transaction is still decided: state must be the worker's)."""
    run = BacktestRun(labels=list(labels))
    for r in rows:
        tx = r[0]
        kind = (r[2] if len(r) > 2 else None) or ""
        run.truth[tx.transaction_id] = Truth(
            tx.ts, tx.card_id, tx.amount, tx.currency, bool(r[1]), kind
        )
    tl = Timeline.build((r[0] for r in rows), run.labels)
    run.unknown_labels, run.early_labels = tl.unknown_labels, tl.early_labels
    entities = Entities()
    records: dict[str, CardRecord] = {}
    with paused_gc():
        _replay(tl, entities, records, serving, run, keep, progress)
    return run


def _replay(
    tl: Timeline,
    entities: Entities,
    records: dict[str, CardRecord],
    serving: Serving,
    run: BacktestRun,
    keep: Callable[[Transaction], bool],
    progress: Callable[[int, int], None] | None,
) -> None:
    done, total = 0, len(tl.txs)
    for group in tl.groups(entities):
        for i in range(0, len(group), BATCH):
            batch = group[i : i + BATCH]
            recs = {tx.card_id: records.setdefault(tx.card_id, CardRecord()) for tx in batch}
            results = engine.process_batch(
                serving,
                batch,
                recs,
                now_iso=batch[-1].event_time,  # decided "at" the event: reproducible output
                dedup_window_s=DEDUP_WINDOW_S,
                entities=entities.get,
            )
            for res in results:
                if not keep(res.tx):
                    continue
                if isinstance(res, engine.Scored):
                    run.decisions[res.tx.transaction_id] = res.decision
                    run.scores.extend(res.scores)
                elif isinstance(res, engine.Rejected):
                    run.rejected[res.tx.transaction_id] = str(res.error)
        done += len(group)
        if progress is not None:
            progress(done, total)
