"""The agents: decode, call the core, send. Nothing else.

Guarantees, and how they are kept:
- Every record is caught per event: a record that cannot be decoded or scored is sent, untouched,
  to a dead-letter topic with the reason in its headers (Faust would otherwise ack it and move on).
- Outputs go through one idempotent confluent-kafka producer and are flushed before the batch's
  events are acked; per-card records are written to their changelog after that flush, so a record
  that says "seen" always follows a decision that was written. Offsets are committed only after
  Faust's own producer (the changelogs) is flushed too. At-least-once, with the per-card dedup
  record as the guard against a second decision on replay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from stream.app import metrics
from stream.app.app import FraudApp, bind_event
from stream.core import engine, outcomes
from stream.core.messages import (
    decode_decision,
    decode_feedback,
    decode_score,
    decode_transaction,
    encode_decision,
    encode_outcome,
    encode_score,
    utc_now_iso,
)
from stream.core.redact import redact
from stream.errors import BrokerError, FraudStreamError, InvalidMessage
from stream.kafka.clients import DeliveryTracker, make_producer
from stream.settings import Settings

log = logging.getLogger("fraudstream.agents")


class Output:
    """The worker's one producer for decisions, scores, outcomes and dead letters."""

    def __init__(self, settings: Settings) -> None:
        self.tracker = DeliveryTracker()
        # message.timeout.ms=0: retry for ever while the broker is away; the batch is not
        # acked until its records are written, so the worker stalls instead of losing them.
        self.producer = make_producer(
            settings,
            **{
                "message.timeout.ms": 0,
                "queue.buffering.max.messages": 500_000,
                # A dead letter carries the original record, which the broker already accepted.
                "message.max.bytes": 10_485_760,
            },
        )

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self.tracker
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def dead_letter(
        self, dlq_topic: str, message: Any, reason: str, text: str, source: str
    ) -> None:
        metrics.DEAD_LETTERS.labels(reason=reason, source=source).inc()
        self.send(
            dlq_topic,
            message.key,
            message.value,
            headers=[
                ("error.class", reason.encode()),
                ("error.message", redact(text)[:1000].encode()),
                ("origin.topic", str(message.topic).encode()),
                ("origin.partition", str(message.partition).encode()),
                ("origin.offset", str(message.offset).encode()),
            ],
        )

    async def flush(self) -> None:
        while await asyncio.to_thread(self.producer.flush, 5.0) > 0:
            log.warning("waiting for Kafka to accept %d outstanding records", len(self.producer))
        if self.tracker.failed is not None:
            # Faust would ack this batch on the way out of the agent; exiting here instead
            # leaves its offsets uncommitted, so a restarted worker decides it again.
            log.critical("Kafka refused a record (%s); exiting without acking", self.tracker.failed)
            logging.shutdown()
            os._exit(70)


class TransactionHandler:
    def __init__(self, fa: FraudApp, out: Output) -> None:
        self.fa = fa
        self.s = fa.settings
        self.out = out
        self.window_s = self.s.dedup_window_hours * 3600.0

    async def handle(self, events: Sequence[Any]) -> None:
        s = self.s
        txs = []
        owners: dict[str, Any] = {}
        for ev in events:
            msg = ev.message
            metrics.TRANSACTIONS.inc()
            try:
                tx = decode_transaction(msg.value, s.max_message_bytes)
                if msg.key != tx.card_id.encode():
                    raise InvalidMessage(
                        "key_mismatch",
                        "the record key must be the transaction's card_id (per-card state is "
                        "partitioned by it); re-publish with key = card_id",
                    )
            except InvalidMessage as exc:
                self.out.dead_letter(s.topic_dlq, msg, exc.reason, exc.message, "transactions")
                continue
            except Exception as exc:  # noqa: BLE001 - never lose a record to a surprise
                self.out.dead_letter(s.topic_dlq, msg, "decode_error", repr(exc), "transactions")
                continue
            txs.append((tx, ev))
            owners.setdefault(tx.card_id, ev)

        if txs:
            try:
                await self._decide([t for t, _ in txs], [e for _, e in txs], owners)
            except FraudStreamError:
                raise
            except Exception:
                # One poisonous transaction must not sink its batch: retry one at a time.
                log.exception("batch of %d failed; retrying one transaction at a time", len(txs))
                for tx, ev in txs:
                    try:
                        await self._decide([tx], [ev], {tx.card_id: ev})
                    except Exception as exc:  # noqa: BLE001
                        self.out.dead_letter(
                            s.topic_dlq, ev.message, "scoring_error", repr(exc), "transactions"
                        )
        await self.out.flush()

    async def _decide(self, txs: list[Any], evs: list[Any], owners: dict[str, Any]) -> None:
        s = self.s
        table = self.fa.card_table
        records: dict[str, engine.CardRecord] = {}
        for card_id, ev in owners.items():
            with bind_event(ev):
                records[card_id] = engine.record_from_bytes(table.get(card_id.encode()))
        serving = self.fa.serving.current
        assert serving is not None
        now = utc_now_iso()
        results = engine.process_batch(
            serving, txs, records, now_iso=now, dedup_window_s=self.window_s
        )
        by_id = {id(t): e for t, e in zip(txs, evs, strict=True)}
        wall = time.time()
        for r in results:
            ev = by_id[id(r.tx)]
            if isinstance(r, engine.Scored):
                d = r.decision
                key = d.transaction_id.encode()
                self.out.send(s.topic_decisions, key, encode_decision(d))
                for sc in r.scores:
                    self.out.send(s.topic_scores, key, encode_score(sc))
                    metrics.SCORES.labels(model_version=sc.model_version, role=sc.role).observe(
                        sc.score
                    )
                metrics.DECISIONS.labels(
                    decision=d.decision, model_version=d.model_version, variant=d.variant
                ).inc()
                if ev.message.timestamp:
                    metrics.DECISION_LATENCY.observe(max(0.0, wall - ev.message.timestamp))
            elif isinstance(r, engine.Rejected):
                self.out.dead_letter(
                    s.topic_dlq, ev.message, r.error.reason, r.error.message, "transactions"
                )
            else:
                metrics.DUPLICATES.inc()
        # Decisions first, then the records that remember them (see the module docstring).
        await self.out.flush()
        for card_id, rec in records.items():
            with bind_event(owners[card_id]):
                table[card_id.encode()] = engine.record_to_bytes(rec)


class JoinHandler:
    """Joins decisions, shadow scores and labels by transaction_id; emits outcomes."""

    def __init__(self, fa: FraudApp, out: Output) -> None:
        self.fa = fa
        self.s = fa.settings
        self.out = out
        self.retention_s = self.s.decision_retention_days * 86400.0
        # Labels held for a decision not seen yet: key -> (partition, offset, since, raw value).
        self.held: dict[bytes, tuple[int, int, float, bytes]] = {}

    def sweep(self, grace_s: float) -> int:
        """Dead-letter labels whose decision has not arrived within ``grace_s``."""
        now = time.monotonic()
        expired = [(k, v) for k, v in self.held.items() if now - v[2] >= grace_s]
        for key, (partition, offset, _, raw) in expired:
            del self.held[key]
            with bind_event(_Anchor(self.s.topic_feedback, partition)):
                rec = self._load(key)
                if rec is not None and rec.decided is not None:
                    continue
                self.fa.join_table.pop(key, None)
            metrics.FEEDBACK_UNKNOWN.inc()
            self.out.dead_letter(
                self.s.topic_feedback_dlq,
                _Held(self.s.topic_feedback, partition, offset, key, raw),
                "unknown_transaction",
                f"no decision for this transaction_id arrived within {grace_s:.0f}s of its label "
                "(never decided by this deployment, or past retention); check the id and topic",
                "feedback",
            )
        return len(expired)

    async def handle(self, events: Sequence[Any]) -> None:
        s = self.s
        for ev in events:
            msg = ev.message
            try:
                with bind_event(ev):
                    if msg.topic == s.topic_decisions:
                        self._on_decision(ev)
                    elif msg.topic == s.topic_scores:
                        self._on_score(ev)
                    else:
                        self._on_feedback(ev)
            except InvalidMessage as exc:
                source = "feedback" if msg.topic == s.topic_feedback else "join"
                self.out.dead_letter(s.topic_feedback_dlq, msg, exc.reason, exc.message, source)
            except Exception as exc:  # noqa: BLE001
                self.out.dead_letter(s.topic_feedback_dlq, msg, "join_error", repr(exc), "join")
        await self.out.flush()

    def _load(self, key: bytes) -> outcomes.JoinRecord | None:
        raw = self.fa.join_table.get(key)
        return outcomes.JoinRecord.from_dict(orjson.loads(raw)) if raw else None

    def _store(self, key: bytes, rec: outcomes.JoinRecord) -> None:
        self.fa.join_table[key] = orjson.dumps(rec.to_dict())

    def _on_decision(self, ev: Any) -> None:
        d = decode_decision(ev.message.value)
        key = d.transaction_id.encode()
        self.held.pop(key, None)
        rec, reverted, new = outcomes.apply_decision_after_label(self._load(key), d)
        self._store(key, rec)
        if reverted or new:
            self._emit(ev, reverted, new)

    def _on_score(self, ev: Any) -> None:
        sc = decode_score(ev.message.value)
        if sc.role != "shadow":
            return  # the deciding model's score is in its decision already
        key = sc.transaction_id.encode()
        rec, reverted, new = outcomes.apply_score_after_label(self._load(key), sc)
        self._store(key, rec)
        if reverted or new:
            self._emit(ev, reverted, new)

    def _on_feedback(self, ev: Any) -> None:
        fb = decode_feedback(ev.message.value)
        key = fb.transaction_id.encode()
        rec = self._load(key)
        if rec is None or rec.decided is None:
            # The label may have raced ahead of its decision (a worker catching up reads the
            # three topics side by side): hold it; the sweep dead-letters it after a grace period.
            self._store(key, outcomes.hold_label(rec, fb, labelled_at=utc_now_iso()))
            self.held[key] = (
                ev.message.partition,
                ev.message.offset,
                time.monotonic(),
                ev.message.value,
            )
            return
        self.held.pop(key, None)
        if rec.decided is None:
            return
        if _age_s(rec.decided.decided_at, fb.reported_at) > self.retention_s:
            metrics.FEEDBACK_UNKNOWN.inc()
            raise InvalidMessage(
                "past_retention",
                "the decision is older than FRAUD_DECISION_RETENTION_DAYS; the label is kept "
                "here only",
            )
        rec, reverted, new = outcomes.apply_label(rec, fb, labelled_at=utc_now_iso())
        self._store(key, rec)
        if reverted or new:
            self._emit(ev, reverted, new)

    def _emit(self, ev: Any, reverted: list[Any], new: list[Any]) -> None:
        s = self.s
        part = ev.message.partition
        touched: dict[str, outcomes.Confusion] = {}
        for o, sign in [*((o, -1) for o in reverted), *((o, 1) for o in new)]:
            mkey = f"{part}|{o.model_version}|{o.variant}"
            if mkey not in touched:
                raw = self.fa.metrics_table.get(mkey.encode())
                touched[mkey] = (
                    outcomes.Confusion.from_dict(orjson.loads(raw)) if raw else outcomes.Confusion()
                )
            conf = touched[mkey]
            if sign < 0:
                conf.revert(o.outcome, o.amount)
            else:
                conf.update(o.outcome, o.amount)
        for mkey, conf in touched.items():
            self.fa.metrics_table[mkey.encode()] = orjson.dumps(conf.to_dict())
        for o in new:
            payload = encode_outcome(o)
            key = o.transaction_id.encode()
            self.out.send(s.topic_outcomes, key, payload)
            if o.outcome == "FP":
                self.out.send(s.topic_false_positives, key, payload)
            elif o.outcome == "FN":
                self.out.send(s.topic_false_negatives, key, payload)
            metrics.FEEDBACK_OUTCOMES.labels(
                model_version=o.model_version, variant=o.variant, outcome=o.outcome
            ).inc()


class _Anchor:
    """Stands in for an event of ``partition`` when a timer touches a table."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Held(topic, partition, -1, None, None)


class _Held:
    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = (
            topic,
            partition,
            offset,
            key,
            value,
        )


def _age_s(decided_at: str, reported_at: str) -> float:
    try:
        a = datetime.fromisoformat(decided_at.replace("Z", "+00:00"))
        b = datetime.fromisoformat(reported_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (b - a).total_seconds()


def install(fa: FraudApp, output: Output | None = None) -> None:
    app = fa.app
    s = fa.settings
    out = output or Output(s)
    tx_handler = TransactionHandler(fa, out)
    join_handler = JoinHandler(fa, out)
    within = s.batch_within_ms / 1000.0

    @app.agent(fa.transactions, name="score-transactions")
    async def score_transactions(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, within):
            await tx_handler.handle(events)

    join_topics = app.topic(
        s.topic_decisions,
        s.topic_scores,
        s.topic_feedback,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )

    @app.agent(join_topics, name="join-feedback")
    async def join_feedback(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, 0.05):
            await join_handler.handle(events)

    @app.timer(interval=s.metrics_publish_seconds)
    async def publish_metrics() -> None:
        book: dict[tuple[str, str], outcomes.Confusion] = {}
        for raw_key, raw in list(fa.metrics_table.items()):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            _part, version, variant = key.split("|", 2)
            conf = outcomes.Confusion.from_dict(orjson.loads(raw))
            out.send(s.topic_metrics, key.encode(), raw)
            book[(version, variant)] = book.get((version, variant), outcomes.Confusion()).merge(
                conf
            )
        for (version, variant), conf in book.items():
            for cell in ("tp", "fp", "tn", "fn"):
                metrics.CONFUSION.labels(
                    model_version=version, variant=variant, cell=cell.upper()
                ).set(getattr(conf, cell))
        try:
            await out.flush()
        except BrokerError:
            log.exception("publishing per-version metrics failed")

    @app.timer(interval=max(1.0, s.feedback_grace_seconds / 10))
    async def sweep_held_labels() -> None:
        if join_handler.sweep(s.feedback_grace_seconds):
            await out.flush()

    @app.timer(interval=5.0)
    async def measure_lag() -> None:
        consumer = app.consumer
        read = getattr(consumer, "_read_offset", {})
        assigned = consumer.assignment()
        owned = {(tp.topic, str(tp.partition)) for tp in assigned}
        for labels in list(metrics.CONSUMER_LAG._metrics):
            if labels not in owned:
                metrics.CONSUMER_LAG.remove(*labels)
        for tp in assigned:
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001, S112 - not yet known after a rebalance
                continue
            pos = read.get(tp)
            if high is not None and pos is not None:
                metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - pos - 1)
                )

    fa.output = out
    fa.tx_handler = tx_handler
    fa.join_handler = join_handler
