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
import base64
import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError

from stream.app import metrics
from stream.app.app import FraudApp, bind_event
from stream.core import engine, outcomes
from stream.core.messages import (
    Transaction,
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
from stream.kafka.clients import make_producer
from stream.settings import Settings

log = logging.getLogger("fraudstream.agents")


class Barrier:
    """The records produced between two checkpoints; done once Kafka has acknowledged all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = asyncio.Event()
        self.failed: KafkaError | None = None

    def add(self) -> None:
        with self._lock:
            self._pending += 1

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:  # delivery callback
        with self._lock:
            self._pending -= 1
            if err is not None and self.failed is None:
                self.failed = err
            finished = self._closed and self._pending == 0
        if finished and self._loop is not None:
            self._loop.call_soon_threadsafe(self._done.set)

    def close(self, loop: asyncio.AbstractEventLoop) -> Barrier:
        with self._lock:
            self._closed = True
            self._loop = loop
            finished = self._pending == 0
        if finished:
            self._done.set()
        return self

    def is_done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()


class Output:
    """The worker's one producer for decisions, scores, outcomes and dead letters.

    Records are produced without waiting; ``checkpoint()`` closes the current batch's
    ``Barrier``, which completes when Kafka has acknowledged every record in it. A background
    thread serves delivery callbacks so that no coroutine blocks on the broker.
    """

    def __init__(self, settings: Settings) -> None:
        # message.timeout.ms=0: retry for ever while the broker is away; offsets are committed
        # only after a flush, so the worker stalls instead of losing records.
        self.producer = make_producer(
            settings,
            **{
                "message.timeout.ms": 0,
                "queue.buffering.max.messages": 500_000,
                "linger.ms": 1,
                # A dead letter carries the original record, which the broker already accepted.
                "message.max.bytes": 10_485_760,
            },
        )
        self._barrier = Barrier()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="fraudstream-output", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.01)

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        barrier = self._barrier
        barrier.add()
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=barrier
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def checkpoint(self) -> Barrier:
        """Close the records sent so far into a barrier; later sends start a new one."""
        closed, self._barrier = self._barrier, Barrier()
        return closed.close(asyncio.get_running_loop())

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
        """Wait until every record sent so far is acknowledged (before offsets are committed)."""
        barrier = self.checkpoint()
        await self.settle(barrier)

    @staticmethod
    async def settle(barrier: Barrier) -> None:
        await barrier.wait()
        if barrier.failed is not None:
            # A record Kafka refused for good: exit without acking or committing, so a
            # restarted worker decides these transactions again instead of losing them.
            log.critical("Kafka refused a record (%s); exiting without committing", barrier.failed)
            logging.shutdown()
            os._exit(70)


class PauseFence:
    """Refuses to write after the process was frozen (SIGSTOP, a VM pause, a swap storm) for
    most of the consumer session timeout: by then the group has likely given this worker's
    partitions to another member, and anything written now would duplicate its work. The
    worker exits without acking; its supervisor restarts it and it rejoins cleanly."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.last: float | None = None  # set by the first tick, once the worker runs

    def tick(self) -> None:
        self.check()
        self.last = time.monotonic()

    def check(self) -> None:
        if self.last is None:
            return
        frozen = time.monotonic() - self.last
        if frozen > self.limit_s:
            log.critical(
                "this worker was frozen for %.1fs (limit %.1fs, 80%% of the session timeout): "
                "exiting without writing, so the partitions' new owner decides these records",
                frozen,
                self.limit_s,
            )
            logging.shutdown()
            os._exit(75)


class TransactionHandler:
    """Decides batches. Card records are written one batch behind, once the previous batch's
    outputs are acknowledged: a record that remembers a transaction always follows its
    decision. Until then the newest records live in ``overlay``, which later batches read."""

    def __init__(self, fa: FraudApp, out: Output) -> None:
        self.fa = fa
        self.s = fa.settings
        self.out = out
        self.window_s = self.s.dedup_window_hours * 3600.0
        self.lock = asyncio.Lock()
        self.batch_no = 0
        # card_id -> (record, an event of the card's partition, batch number)
        self.overlay: dict[str, tuple[engine.CardRecord, Any, int]] = {}
        self.unpersisted: list[tuple[int, Barrier]] = []
        self.fence = PauseFence(float(fa.app.conf.broker_session_timeout) * 0.8)
        # Events buffered before a rebalance may belong to partitions given away since; their
        # new owner reads them again from the committed offset, so deciding them here would
        # only duplicate its work. (Off in agent tests, which have no consumer group.)
        self.check_assignment = True

    async def handle(self, events: Sequence[Any]) -> None:
        async with self.lock:
            txs, evs, owners = self._decode(events)
            if txs:
                try:
                    self._decide(txs, evs, owners)
                except FraudStreamError:
                    raise
                except Exception:
                    # One poisonous transaction must not sink its batch: one at a time.
                    log.exception("batch of %d failed; retrying one at a time", len(txs))
                    for tx, ev in zip(txs, evs, strict=True):
                        try:
                            self._decide([tx], [ev], {tx.card_id: ev})
                        except Exception as exc:  # noqa: BLE001
                            self.out.dead_letter(
                                self.s.topic_dlq,
                                ev.message,
                                "scoring_error",
                                repr(exc),
                                "transactions",
                            )
            self.batch_no += 1
            self.unpersisted.append((self.batch_no, self.out.checkpoint()))
            # Persist what the previous batches decided (usually acknowledged by now).
            await self._persist(keep_last=1)

    async def drain(self) -> None:
        """Persist every pending card record (idle timer, rebalance, shutdown)."""
        async with self.lock:
            await self._persist(keep_last=0)

    async def decide_now(self, tx: Transaction, raw: bytes, partition: int) -> engine.Result:
        """One transaction from the HTTP API, through exactly the stream's path."""
        ev = _Anchor(self.s.topic_transactions, partition, raw, tx.card_id.encode())
        async with self.lock:
            results = self._decide([tx], [ev], {tx.card_id: ev})
            self.batch_no += 1
            barrier = self.out.checkpoint()
            self.unpersisted.append((self.batch_no, barrier))
        # The answer goes out once its records are durable; waiting outside the lock lets
        # concurrent requests (and stream batches) share one acknowledgement round trip.
        await Output.settle(barrier)
        return results[0]

    def _decode(self, events: Sequence[Any]) -> tuple[list[Any], list[Any], dict[str, Any]]:
        s = self.s
        txs: list[Any] = []
        evs: list[Any] = []
        owners: dict[str, Any] = {}
        assigned = self.fa.app.consumer.assignment() if self.check_assignment else None
        for ev in events:
            msg = ev.message
            if assigned is not None and msg.tp not in assigned:
                metrics.REVOKED_SKIPPED.inc()
                continue
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
            txs.append(tx)
            evs.append(ev)
            owners.setdefault(tx.card_id, ev)
        return txs, evs, owners

    def _record(self, card_id: str, ev: Any) -> engine.CardRecord:
        held = self.overlay.get(card_id)
        if held is not None:
            return held[0]
        with bind_event(ev):
            raw = self.fa.card_table.get(card_id.encode())
        try:
            return engine.record_from_bytes(raw)
        except FraudStreamError:
            # A record this version cannot read must not stall the partition for ever.
            log.exception("unreadable card record; starting the card afresh")
            return engine.CardRecord()

    def _decide(
        self, txs: list[Any], evs: list[Any], owners: dict[str, Any]
    ) -> list[engine.Result]:
        s = self.s
        records = {card: self._record(card, ev) for card, ev in owners.items()}
        # Work on copies: a batch that fails half-way must not leave half-updated records.
        work = {card: engine.CardRecord(rec.state, dict(rec.seen)) for card, rec in records.items()}
        serving = self.fa.serving.current
        assert serving is not None
        now = utc_now_iso()
        results = engine.process_batch(
            serving, txs, work, now_iso=now, dedup_window_s=self.window_s
        )
        by_id = {id(t): e for t, e in zip(txs, evs, strict=True)}
        wall = time.time()
        self.fence.check()  # the last moment before anything of this batch is written
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
                ts = ev.message.timestamp
                if ts:
                    metrics.DECISION_LATENCY.observe(max(0.0, wall - ts))
            elif isinstance(r, engine.Rejected):
                self.out.dead_letter(
                    s.topic_dlq, ev.message, r.error.reason, r.error.message, "transactions"
                )
            else:
                metrics.DUPLICATES.inc()
        batch = self.batch_no + 1
        for card, rec in work.items():
            self.overlay[card] = (rec, owners[card], batch)
        return results

    async def _persist(self, keep_last: int) -> None:
        while len(self.unpersisted) > keep_last:
            upto, barrier = self.unpersisted[0]
            if keep_last and not barrier.is_done():
                return  # not acknowledged yet: try after the next batch
            await Output.settle(barrier)
            self.unpersisted.pop(0)
            table = self.fa.card_table
            for card in [c for c, (_, _, b) in self.overlay.items() if b <= upto]:
                rec, ev, _ = self.overlay.pop(card)
                with bind_event(ev):
                    table[card.encode()] = engine.record_to_bytes(rec)


class JoinHandler:
    """Joins decisions, shadow scores and labels by transaction_id; emits outcomes."""

    def __init__(self, fa: FraudApp, out: Output) -> None:
        self.fa = fa
        self.s = fa.settings
        self.out = out
        self.retention_s = self.s.decision_retention_days * 86400.0
        # Per batch: records read or changed, with an event of their partition; written once at
        # the end of the batch, after the batch's outcomes are acknowledged.
        self._records: dict[bytes, tuple[outcomes.JoinRecord | None, Any]] = {}
        self._counts: dict[bytes, tuple[outcomes.Confusion, Any]] = {}
        self._dirty: set[bytes] = set()
        self._dirty_counts: set[bytes] = set()
        self._sent = 0

    @property
    def held(self) -> dict[bytes, tuple[int, int, float, bytes]]:
        """Labels held for a decision not seen yet (in a changelog-backed table, so a restart
        keeps them): key -> (partition, offset, held since (POSIX s), original value)."""
        out = {}
        for key, raw in list(self.fa.held_table.items()):
            p, o, t, v = orjson.loads(raw)
            out[bytes(key)] = (int(p), int(o), float(t), base64.b64decode(v))
        return out

    def _hold(self, key: bytes, msg: Any) -> None:
        value = base64.b64encode(msg.value or b"").decode()
        self.fa.held_table[key] = orjson.dumps([msg.partition, msg.offset, time.time(), value])

    def _release(self, key: bytes) -> None:
        if key in self.fa.held_table:
            del self.fa.held_table[key]

    def sweep(self, grace_s: float) -> int:
        """Dead-letter labels whose decision has not arrived within ``grace_s``."""
        now = time.time()
        expired = [(k, v) for k, v in self.held.items() if now - v[2] >= grace_s]
        for key, (partition, offset, _, raw) in expired:
            with bind_event(_Anchor(self.s.topic_feedback, partition)):
                self._release(key)
                got = self.fa.join_table.get(key)
                rec = outcomes.JoinRecord.from_dict(orjson.loads(got)) if got else None
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
        self._sent = 0
        for ev in events:
            msg = ev.message
            self._ev = ev
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
                self._sent += 1
            except Exception as exc:  # noqa: BLE001
                self.out.dead_letter(s.topic_feedback_dlq, msg, "join_error", repr(exc), "join")
                self._sent += 1
        if self._sent:
            # A stored label must never get ahead of the outcome it produced.
            await self.out.flush()
        self._write_back()

    def _write_back(self) -> None:
        for key in self._dirty:
            rec, ev = self._records[key]
            with bind_event(ev):
                if rec is None:
                    self.fa.join_table.pop(key, None)
                else:
                    self.fa.join_table[key] = orjson.dumps(rec.to_dict())
        for key in self._dirty_counts:
            conf, ev = self._counts[key]
            with bind_event(ev):
                self.fa.metrics_table[key] = orjson.dumps(conf.to_dict())
        self._records.clear()
        self._counts.clear()
        self._dirty.clear()
        self._dirty_counts.clear()

    def _load(self, key: bytes) -> outcomes.JoinRecord | None:
        if key in self._records:
            return self._records[key][0]
        raw = self.fa.join_table.get(key)
        rec = outcomes.JoinRecord.from_dict(orjson.loads(raw)) if raw else None
        self._records[key] = (rec, self._ev)
        return rec

    def _store(self, key: bytes, rec: outcomes.JoinRecord) -> None:
        self._records[key] = (rec, self._ev)
        self._dirty.add(key)

    def _on_decision(self, ev: Any) -> None:
        d = decode_decision(ev.message.value)
        key = d.transaction_id.encode()
        self._release(key)
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
        msg = ev.message
        n = self.fa.app.consumer.topic_partitions(msg.topic) or self.s.partitions
        if msg.key is not None and (murmur2(msg.key) & 0x7FFFFFFF) % n != msg.partition:
            # The join finds a decision only in the partition its transaction_id hashes to.
            raise InvalidMessage(
                "wrong_partition",
                f"this label is in partition {msg.partition}, but its transaction_id hashes to "
                f"{(murmur2(msg.key) & 0x7FFFFFFF) % n}: publish feedback with Kafka's default "
                "(murmur2) partitioner, as the Java client does (librdkafka: "
                "partitioner=murmur2_random)",
            )
        fb = decode_feedback(msg.value)
        key = fb.transaction_id.encode()
        rec = self._load(key)
        if rec is None or rec.decided is None:
            # The label may have raced ahead of its decision (a worker catching up reads the
            # three topics side by side): hold it; the sweep dead-letters it after a grace period.
            self._store(key, outcomes.hold_label(rec, fb, labelled_at=utc_now_iso()))
            self._hold(key, msg)
            return
        self._release(key)
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
        touched: dict[bytes, outcomes.Confusion] = {}
        for o, sign in [*((o, -1) for o in reverted), *((o, 1) for o in new)]:
            mkey = f"{part}|{o.model_version}|{o.variant}".encode()
            if mkey not in touched:
                if mkey in self._counts:
                    base = self._counts[mkey][0]
                else:
                    raw = self.fa.metrics_table.get(mkey)
                    base = (
                        outcomes.Confusion.from_dict(orjson.loads(raw))
                        if raw
                        else outcomes.Confusion()
                    )
                touched[mkey] = outcomes.Confusion().merge(base)  # a copy: all or nothing
            conf = touched[mkey]
            if sign < 0:
                conf.revert(o.outcome, o.amount)
            else:
                conf.update(o.outcome, o.amount)
        for mkey, conf in touched.items():
            self._counts[mkey] = (conf, ev)
            self._dirty_counts.add(mkey)
        self._sent += len(new)
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
    """Stands in for an event of ``partition`` when a timer or a request touches a table."""

    def __init__(
        self, topic: str, partition: int, value: bytes | None = None, key: bytes | None = None
    ) -> None:
        self.message = _Held(topic, partition, -1, key, value)
        self.message.timestamp = time.time()


class _Held:
    """The parts of a Kafka message the dead-letter path needs."""

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
        self.timestamp: float | None = None


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
    # One producer per agent: each agent's checkpoints then cover exactly its own records.
    out = output or Output(s)
    join_out = output or Output(s)
    tx_handler = TransactionHandler(fa, out)
    join_handler = JoinHandler(fa, join_out)
    within = s.batch_within_ms / 1000.0

    def hook_commit() -> None:
        """Before Faust commits offsets (timer, rebalance, shutdown) it flushes its producer;
        make that also wait for our outputs and write the pending card records first."""
        producer = app.producer
        if getattr(producer, "_fraudstream_hooked", False):
            return
        original = producer.flush

        async def flush_outputs_first() -> None:
            await tx_handler.drain()
            await out.flush()
            await join_out.flush()
            await original()

        # An instance attribute shadows the method: Faust's commit path calls producer.flush().
        setattr(producer, "flush", flush_outputs_first)  # noqa: B010
        setattr(producer, "_fraudstream_hooked", True)  # noqa: B010

    async def score_transactions(stream: Any) -> None:
        hook_commit()
        async for events in stream.take_events(s.batch_size, within):
            await tx_handler.handle(events)

    async def watch_for_pauses() -> None:
        tx_handler.fence.tick()

    async def persist_idle_card_records() -> None:
        if tx_handler.unpersisted and tx_handler.unpersisted[-1][1].is_done():
            await tx_handler.drain()

    # Decisions carry their shadow score, so the join does not need fraud.scores.
    join_topics = app.topic(
        s.topic_decisions,
        s.topic_feedback,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )

    async def join_feedback(stream: Any) -> None:
        hook_commit()
        async for events in stream.take_events(s.batch_size, 0.05):
            await join_handler.handle(events)

    async def publish_metrics() -> None:
        book: dict[tuple[str, str], outcomes.Confusion] = {}
        for raw_key, raw in list(fa.metrics_table.items()):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            _part, version, variant = key.split("|", 2)
            conf = outcomes.Confusion.from_dict(orjson.loads(raw))
            join_out.send(s.topic_metrics, key.encode(), raw)
            book[(version, variant)] = book.get((version, variant), outcomes.Confusion()).merge(
                conf
            )
        for (version, variant), conf in book.items():
            for cell in ("tp", "fp", "tn", "fn"):
                metrics.CONFUSION.labels(
                    model_version=version, variant=variant, cell=cell.upper()
                ).set(getattr(conf, cell))
        try:
            await join_out.flush()
        except BrokerError:
            log.exception("publishing per-version metrics failed")

    async def sweep_held_labels() -> None:
        if join_handler.sweep(s.feedback_grace_seconds):
            await join_out.flush()

    # A deployment may split the roles: scoring workers and join workers scale apart.
    app.timer(interval=0.25)(watch_for_pauses)
    if "score" in s.role_set:
        app.agent(fa.transactions, name="score-transactions")(score_transactions)
        app.timer(interval=0.2)(persist_idle_card_records)
    if "join" in s.role_set:
        app.agent(join_topics, name="join-feedback")(join_feedback)
        app.timer(interval=s.metrics_publish_seconds)(publish_metrics)
        app.timer(interval=max(1.0, s.feedback_grace_seconds / 10))(sweep_held_labels)

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
