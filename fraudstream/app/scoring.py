"""The fraud decision as a coordinator handler: a batch of raw `transactions` records goes down
to the core once (``engine.step``) and comes back as decisions, scores and dead letters to send
and card records to keep. The per-card records of each owned partition live here, split into
what Kafka has committed and what the open transaction changed (``CardStore``).

With entity state (docs/entity-state.md) the handler also reads merchant and card-label state
from the worker's follower, writes one entity event per decided transaction into the same
transaction (so the aggregator absorbs each exactly once), reports its partitions' watermarks
(``watermarks``), and holds a transaction back (``admit``) until the follower's watermark
reaches its cutoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fraudstream.app import metrics
from fraudstream.app.entities import EntityFollower, Gate
from fraudstream.app.partitioning import card_home
from fraudstream.app.serving import ServingManager
from fraudstream.coordinator.ports import Handled, Send
from fraudstream.core import engine, entity, entitylog, features
from fraudstream.core.cardstore import CardStore
from fraudstream.core.messages import (
    Transaction,
    decode_transaction,
    encode_decision,
    encode_score,
    utc_now_iso,
)
from fraudstream.core.records import Record, dead_letter_headers
from fraudstream.errors import FraudStreamError
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.scoring")

# An idle partition reports the clock this often at most: the gate needs the watermark past
# cutoff(now), which moves hourly; more often would commit a transaction per tick for nothing.
IDLE_EVERY_S = 60.0


#: The state key of a partition's position in the transactions repartition topic: not UTF-8,
#: so never a card's key.
MOVED_POSITION = b"\xff\xfe repartition position"
#: The result of a record moved to its card's partition, or moved there and decided already
#: (results of records from the log are not read: only API requests' are answered).
MOVED = engine.Refused("moved", "moved to its card's partition through the repartition topic")


@dataclass(slots=True)
class Position:
    """Where a partition stands in the transactions repartition topic: the next offset to
    decide, as committed, in the commit under way and in the open transaction."""

    committed: int | None = None
    pending: int | None = None
    sealed: int | None = None


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
        *,
        follower: EntityFollower | None = None,
        events_topic: str = "",
    ) -> None:
        self.s = settings
        self.serving = serving
        self.store = CardStore()
        self.window_s = settings.dedup_window_hours * 3600.0
        self.partitions = partitions
        self.side_topic = settings.topic_transactions_repartition
        self.positions: dict[int, Position] = {}
        self._moved: Counter[int] = Counter()  # moves in each open transaction, for the metric
        self._moved_sealed: Counter[int] = Counter()  # and in the commit under way
        self.follower = follower
        self.gate = None if follower is None else Gate(follower, settings.entity_max_wait_s)
        self.events_topic = events_topic
        self.newest: dict[int, float] = {}  # partition -> newest event time decided
        self.reported: dict[int, float] = {}  # partition -> watermark written (open or committed)

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        records: list[tuple[str, engine.CardRecord | None]] = []
        at = Position()
        for key, value in state:
            if key == MOVED_POSITION:
                at = Position(*(3 * [None if value is None else int(value)]))
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
        gate = self.gate
        if gate is None or gate.open_untimed(record.partition):
            # Live traffic (the watermark is seconds behind, cutoffs minutes), the wait off,
            # or a partition that gave up waiting: open, the record's time unread.
            return True
        try:
            ts: float | None = decode_transaction(record.value, self.s.max_message_bytes).ts
        except Exception:  # noqa: BLE001 - step dead-letters it with the reason
            ts = None
        return gate.open_for(record.partition, ts)

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
            entities=entity.nothing_known if self.follower is None else self.follower.get,
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
                moves.extend(self._moved_entity_event(rec))
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
                if self.follower is not None:
                    out.extend(self._entity_event(rec, verdict))
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

    def _entity_event(self, rec: Record, verdict: engine.Scored) -> list[Send]:
        if rec.topic == self.side_topic:
            return []  # sent by the partition that moved it (_moved_entity_event)
        return self._tx_event(rec.partition, verdict.tx)

    def _moved_entity_event(self, rec: Record) -> list[Send]:
        """A moved transaction's merchant event, sent by the partition that read it, in the
        transaction that moves it: its watermark covers the event (the card's partition decides
        it later, after that watermark may have passed its time). One the card's partition then
        refuses for another reason than decoding, or finds a duplicate, is counted by its
        merchant all the same (docs/entity-state.md)."""
        if self.follower is None:
            return []
        try:
            tx = decode_transaction(rec.value, self.s.max_message_bytes)
        except Exception:  # noqa: BLE001 - the card's partition dead-letters it with the reason
            return []
        if rec.key != tx.card_id.encode():
            return []  # refused as key_mismatch where it lands
        return self._tx_event(rec.partition, tx)

    def _tx_event(self, partition: int, tx: Transaction) -> list[Send]:
        if tx.ts > self.newest.get(partition, entitylog.NEVER):
            self.newest[partition] = tx.ts
        if not features.valid_amount(tx.amount):
            return []  # the offline timeline leaves it out too (core.replay)
        key = entity.merchant_key(tx.merchant_id).encode()
        value = entitylog.encode_tx(tx.ts, features.cents_of(tx.amount))
        return [Send(partition, self.events_topic, key, value)]

    async def until_open(self, records: Sequence[Record]) -> None:
        """Wait until the follower's watermark covers moved ``records`` (the partition that
        moved them waited for it; this worker's follower may be behind that one's), at most
        ``entity_max_wait_s``. Not the gate's park: that would report the moved record's time
        as this partition's watermark."""
        gate = self.gate
        if gate is None or gate.live() or gate.max_wait_s == 0:
            return
        times = []
        for rec in records:
            try:
                times.append(decode_transaction(rec.value, self.s.max_message_bytes).ts)
            except Exception:  # noqa: BLE001, S112 - dead-lettered where it is decided
                continue
        if not times:
            return
        need = entitylog.required(max(times), time.time())
        deadline = time.monotonic() + gate.max_wait_s
        while gate.follower.watermark < need:
            if time.monotonic() >= deadline:
                metrics.GATE_TIMEOUTS.inc()
                log.warning(
                    "moved transactions waited %.0fs for the entity watermark: scoring them with "
                    "the state there is; check the aggregator and the join",
                    gate.max_wait_s,
                )
                return
            await asyncio.sleep(0.02)

    def watermarks(self, partition: int, *, idle: bool, partitions: int) -> list[Send]:
        """The watermark records partition ``partition`` owes the aggregator now (to each of the
        ``partitions`` entity-events partitions), or none when it has not moved: the event time
        of the transaction it waits at, the clock when it is ``idle`` (caught up for a while),
        else the newest event time it decided (transactions come in time order per partition;
        a later one that is older is absorbed late: docs/entity-state.md)."""
        if self.follower is None:
            return []
        waiting = None if self.gate is None else self.gate.waiting_at(partition)
        if waiting is not None:
            mark: float | None = waiting
        elif idle:
            mark = time.time()
        else:
            mark = self.newest.get(partition)
        last = self.reported.get(partition, entitylog.NEVER)
        if (
            mark is None
            or mark <= last
            or (waiting is None and idle and mark - last < IDLE_EVERY_S)
        ):
            return []
        self.reported[partition] = mark
        value = entitylog.encode_watermark(entitylog.tx_source(partition), mark)
        return [
            Send(partition, self.events_topic, entitylog.WATERMARK_KEY, value, to_partition=q)
            for q in range(partitions)
        ]

    def owed(self, partition: int) -> list[Send]:
        """The partition's watermark, with every commit: a partition parked at the gate
        commits at once, and the aggregator needs this watermark from that very commit."""
        if self.follower is None or self.follower.partitions == 0:
            return []
        return self.watermarks(partition, idle=False, partitions=self.follower.partitions)

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = [
            (card.encode(), engine.record_to_bytes(rec))
            for card, rec in self.store.pending(partition).items()
        ]
        at = self.positions.get(partition)
        if at is not None and at.pending != at.committed and at.pending is not None:
            out.append((MOVED_POSITION, str(at.pending).encode()))
        return out

    def seal(self, partition: int) -> None:
        """A commit begins with what ``changes`` listed (``ports.Sealing``)."""
        self.store.seal(partition)
        if (at := self.positions.get(partition)) is not None:
            at.sealed = at.pending
        self._moved_sealed[partition] += self._moved.pop(partition, 0)

    def unseal(self, partition: int) -> None:
        self.store.unseal(partition)
        if (at := self.positions.get(partition)) is not None:
            at.sealed = at.committed
        self._moved[partition] += self._moved_sealed.pop(partition, 0)

    def committed(self, partition: int) -> None:
        self.store.commit(partition)
        if (at := self.positions.get(partition)) is not None:
            at.committed = at.sealed
        metrics.TRANSACTIONS_MOVED.inc(self._moved_sealed.pop(partition, 0))
        metrics.CARD_RECORDS.labels(partition=str(partition)).set(self.store.size(partition))

    def aborted(self, partition: int) -> None:
        self.store.abort(partition)
        if (at := self.positions.get(partition)) is not None:
            at.pending = at.sealed = at.committed  # its records are decided again from memory
        self._moved.pop(partition, None)
        self._moved_sealed.pop(partition, None)
        self.reported.pop(partition, None)  # its watermark records were undone too

    def drop(self, partition: int) -> None:
        self.store.drop(partition)
        self.positions.pop(partition, None)
        self._moved.pop(partition, None)
        self._moved_sealed.pop(partition, None)
        self.reported.pop(partition, None)
        self.newest.pop(partition, None)
        with contextlib.suppress(KeyError):
            metrics.CARD_RECORDS.remove(str(partition))
