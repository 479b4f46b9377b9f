"""Replay a labelled history through the worker's engine, in process, no broker.

The path a live worker takes for every transaction — ``engine.process_batch``: card record,
dedup, ``features.step`` with the entity lookup, routing, every routed model, thresholds,
reasons — fed by the offline timeline (``core.replay``): transactions in event-time order,
labels absorbed into merchant and card state at the moment they arrived. What comes out is the
same records the worker writes to ``fraud.decisions`` and ``fraud.scores``, so the metrics code
(:mod:`fraudstream.backtest.evaluate`) takes them from here or, with ``--through-kafka``
(:func:`run_through_kafka`), from the topics live workers wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    _truth(rows, run)
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


@dataclass(frozen=True, slots=True)
class ThroughKafka:
    """Where and how a through-Kafka backtest runs."""

    bootstrap: str
    workers: int = 1
    partitions: int = 2
    log_dir: Path = Path("backtest-out/workers")


def _truth(rows: Sequence[tuple[Transaction, bool] | tuple[Transaction, bool, str | None]],
           run: BacktestRun) -> None:  # fmt: skip
    for r in rows:
        tx = r[0]
        kind = (r[2] if len(r) > 2 else None) or ""
        run.truth[tx.transaction_id] = Truth(
            tx.ts, tx.card_id, tx.amount, tx.currency, bool(r[1]), kind
        )


def run_through_kafka(
    rows: Sequence[tuple[Transaction, bool] | tuple[Transaction, bool, str | None]],
    labels: Sequence[LabelEvent],
    versions: Sequence[str],
    models_dir: Path,
    share: float,
    shadow: bool,
    keep: Callable[[Transaction], bool],
    through: ThroughKafka,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestRun:
    """The same history published to a broker and decided by live workers (entity state from
    the aggregator, labels through the join): decisions and scores as read back."""
    from fraudstream.backtest.stream import score_through_kafka, settings_for

    if len(versions) > 2:
        raise ValueError("through Kafka, name a champion and at most one challenger")
    s = settings_for(
        through.bootstrap,
        models_dir,
        versions[0],
        versions[1] if len(versions) > 1 else None,
        share,
        shadow,
        partitions=through.partitions,
    )
    run = BacktestRun(labels=list(labels))
    _truth(rows, run)
    txs = [r[0] for r in rows]
    tl = Timeline.build(txs, run.labels)
    run.unknown_labels, run.early_labels = tl.unknown_labels, tl.early_labels
    by_id = {tx.transaction_id: tx for tx in tl.txs}
    # Only labels of transactions in the history: any other would wait in the join for a
    # decision that never comes, holding the label watermark back.
    known = [lab for lab in run.labels if lab.transaction_id in by_id]
    got = score_through_kafka(
        s, tl.txs, known, workers=through.workers, log_dir=through.log_dir, progress=progress
    )
    for tid, d in got.decisions.items():
        if keep(by_id[tid]):
            run.decisions[tid] = d
    run.scores = [sc for (tid, _), sc in got.scores.items() if tid in run.decisions]
    return run
