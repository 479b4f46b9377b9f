"""The fraud decision as a coordinator handler: a batch of raw `transactions` records goes down
to the core once (``engine.step``) and comes back as decisions, scores and dead letters to send
and card records to keep. The per-card records of each owned partition live here, split into
what Kafka has committed and what the open transaction changed (``CardStore``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fraudstream.app import metrics
from fraudstream.app.partitioning import card_home
from fraudstream.app.serving import ServingManager
from fraudstream.coordinator.ports import Handled, Send
from fraudstream.core import engine
from fraudstream.core.cardstore import CardStore
from fraudstream.core.messages import encode_decision, encode_score, utc_now_iso
from fraudstream.core.records import Record, dead_letter_headers
from fraudstream.errors import FraudStreamError
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.scoring")


#: The state key of a partition's position in the transactions repartition topic: not UTF-8,
#: so never a card's key.
MOVED_POSITION = b"\xff\xfe repartition position"
#: The result of a record moved to its card's partition, or moved there and decided already
#: (results of records from the log are not read: only API requests' are answered).
MOVED = engine.Refused("moved", "moved to its card's partition through the repartition topic")


@dataclass(slots=True)
class Position:
    """Where a partition stands in the transactions repartition topic: the next offset to
    decide, as committed and in the open transaction."""

    committed: int | None = None
    pending: int | None = None


class ScoringHandler:
    """Decides transactions; one ``engine.Verdict`` per record.

    A transaction off its card's murmur2 partition (a producer with another partitioner) is
    not decided where it is: it is written, untouched, to the transactions repartition topic,
    which murmur2 partitions by card, in the same transaction as its input offset; the
    coordinator's ``handle_side`` brings it back to the card's partition, decided there with
    the card's state. ``partitions()`` says how many partitions there are (None: never move).
    """

    def __init__(
        self,
        settings: Settings,
        serving: ServingManager,
        partitions: Callable[[], int | None] | None = None,
    ) -> None:
        self.s = settings
        self.serving = serving
        self.store = CardStore()
        self.window_s = settings.dedup_window_hours * 3600.0
        self.partitions = partitions
        self.side_topic = settings.topic_transactions_repartition
        self.positions: dict[int, Position] = {}
        self._moved: Counter[int] = Counter()  # moves in each open transaction, for the metric

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        records: list[tuple[str, engine.CardRecord | None]] = []
        at = Position()
        for key, value in state:
            if key == MOVED_POSITION:
                at = Position(*(2 * [None if value is None else int(value)]))
                continue
            card = key.decode("utf-8", "replace")
            try:
                records.append((card, None if value is None else engine.record_from_bytes(value)))
            except FraudStreamError:
                # A record this version cannot read must not stall the partition for ever.
                log.exception(
                    "unreadable card record in partition %d; card starts afresh", partition
                )
                records.append((card, None))
        self.positions[partition] = at
        self._moved[partition] = 0
        n = self.store.load(partition, records)
        metrics.CARD_RECORDS.labels(partition=str(partition)).set(n)
        return n

    def admit(self, record: Record) -> bool:
        return True  # card features are exact to the event: nothing to wait for

    def step(self, records: Sequence[Record]) -> Handled[engine.Verdict]:
        serving = self.serving.current
        assert serving is not None, "the worker starts only with a champion loaded"
        metrics.TRANSACTIONS.inc(
            sum(1 for r in records if r.from_log and r.topic != self.side_topic)
        )
        moves, todo = self._route(records)
        done = engine.step(
            serving,
            todo,
            self.store.get,
            max_bytes=self.s.max_message_bytes,
            now_iso=utc_now_iso(),
            dedup_window_s=self.window_s,
        )
        if done.retried_singly:
            log.error("a batch of %d failed as a whole; it was decided one at a time", len(records))
        for (partition, card), rec in done.cards.items():
            self.store.put(partition, card, rec)
        verdicts = {id(rec): v for rec, v in done.verdicts}
        return Handled(
            moves + self._sends(done.verdicts), [verdicts.get(id(r), MOVED) for r in records]
        )

    def _route(self, records: Sequence[Record]) -> tuple[list[Send], list[Record]]:
        """(the moves of records off their card's partition, the records to decide here)."""
        n = self.partitions() if self.partitions is not None else None
        moves: list[Send] = []
        todo: list[Record] = []
        for rec in records:
            p = rec.partition
            if rec.topic == self.side_topic:
                at = self.positions[p]
                if at.pending is not None and rec.offset < at.pending:
                    continue  # decided already: in a committed or this open transaction
                at.pending = rec.offset + 1
                todo.append(rec)
            elif n and rec.from_log and rec.key is not None and card_home(rec.key, n) != p:
                origin = [
                    ("origin.topic", rec.topic.encode()),
                    ("origin.partition", str(p).encode()),
                    ("origin.offset", str(rec.offset).encode()),
                ]
                moves.append(Send(p, self.side_topic, rec.key, rec.value, origin))
                self._moved[p] += 1
            else:
                todo.append(rec)
        return moves, todo

    def moved_position(self, partition: int) -> int | None:
        """The committed next offset of ``partition`` in the repartition topic (None: its
        start), where a reader of that topic starts when the partition is opened."""
        at = self.positions.get(partition)
        return None if at is None else at.committed

    def _sends(self, verdicts: Sequence[tuple[Record, engine.Verdict]]) -> list[Send]:
        s = self.s
        out: list[Send] = []
        wall = time.time()
        # Metrics are counted per batch and label set: per event they cost ~12 µs.
        decided: Counter[tuple[str, str, str]] = Counter()
        scores: dict[tuple[str, str], list[float]] = {}
        dead: Counter[str] = Counter()
        rule_hits: Counter[str] = Counter()
        duplicates = 0
        for rec, verdict in verdicts:
            p = rec.partition
            if isinstance(verdict, engine.Scored):
                d = verdict.decision
                key = d.transaction_id.encode()
                out.append(Send(p, s.topic_decisions, key, encode_decision(d)))
                for sc in verdict.scores:
                    out.append(Send(p, s.topic_scores, key, encode_score(sc)))
                    scores.setdefault((sc.model_version, sc.role), []).append(sc.score)
                decided[(d.decision, d.model_version, d.variant)] += 1
                rule_hits.update(c.ref for c in d.reason_codes if c.source == "rule")
                if rec.timestamp:
                    metrics.DECISION_LATENCY.observe(max(0.0, wall - rec.timestamp))
            elif isinstance(verdict, engine.Refused):
                headers = dead_letter_headers(rec, verdict.reason, verdict.message)
                out.append(Send(p, s.topic_dlq, rec.key, rec.value, headers))
                dead[verdict.reason] += 1
            else:
                duplicates += 1
        for (kind, version, variant), n in decided.items():
            metrics.DECISIONS.labels(decision=kind, model_version=version, variant=variant).inc(n)
        for (version, role), values in scores.items():
            histogram = metrics.SCORES.labels(model_version=version, role=role)
            for value in values:
                histogram.observe(value)
        for rule, n in rule_hits.items():
            metrics.RULE_HITS.labels(rule=rule).inc(n)
        for reason, n in dead.items():
            metrics.DEAD_LETTERS.labels(reason=reason, source="transactions").inc(n)
        if duplicates:
            metrics.DUPLICATES.inc(duplicates)
        return out

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = [
            (card.encode(), engine.record_to_bytes(rec))
            for card, rec in self.store.pending(partition).items()
        ]
        at = self.positions.get(partition)
        if at is not None and at.pending != at.committed and at.pending is not None:
            out.append((MOVED_POSITION, str(at.pending).encode()))
        return out

    def committed(self, partition: int) -> None:
        self.store.commit(partition)
        if (at := self.positions.get(partition)) is not None:
            at.committed = at.pending
        metrics.TRANSACTIONS_MOVED.inc(self._moved.pop(partition, 0))
        metrics.CARD_RECORDS.labels(partition=str(partition)).set(self.store.size(partition))

    def aborted(self, partition: int) -> None:
        self.store.abort(partition)
        if (at := self.positions.get(partition)) is not None:
            at.pending = at.committed  # its records are decided again from memory
        self._moved.pop(partition, None)

    def drop(self, partition: int) -> None:
        self.store.drop(partition)
        self.positions.pop(partition, None)
        self._moved.pop(partition, None)
        with contextlib.suppress(KeyError):
            metrics.CARD_RECORDS.remove(str(partition))
