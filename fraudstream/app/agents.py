"""The agents: decode, call the core, send. Nothing else.

Guarantees, and how they are kept:
- Every record is caught per event: a record that cannot be decoded or scored is sent, untouched,
  to a dead-letter topic with the reason in its headers (Faust would otherwise ack it and move on).
- Scoring is exactly-once per input partition: its decisions, scores, dead letters, changed card
  records and consumer offset are committed in one Kafka transaction (``TransactionHandler``,
  ``fraudstream.kafka.txn``); a new owner of a partition fences the old one before reading its
  state. The per-card dedup record stays as a second line (a re-published transaction_id).
- The feedback join is at-least-once: its outputs are flushed before its offsets are committed,
  and a replayed label or decision finds its join record and changes nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn, Protocol, cast

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError

from fraudstream.app import metrics
from fraudstream.app.app import FraudApp, bind_event
from fraudstream.core import engine, outcomes
from fraudstream.core.cardstore import CardStore
from fraudstream.core.messages import (
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
from fraudstream.core.offsets import InOrderOffsets
from fraudstream.core.redact import redact
from fraudstream.errors import (
    BrokerError,
    Fenced,
    FraudStreamError,
    InvalidMessage,
    TransactionAborted,
)
from fraudstream.kafka.admin import changelog_topic
from fraudstream.kafka.clients import group_committed_offsets, has_committed_records, make_producer
from fraudstream.settings import Settings

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


def dlq_headers(message: Any, reason: str, text: str) -> list[tuple[str, bytes]]:
    """The contract's dead-letter headers; the value and key stay the original bytes."""
    return [
        ("error.class", reason.encode()),
        ("error.message", redact(text)[:1000].encode()),
        ("origin.topic", str(message.topic).encode()),
        ("origin.partition", str(message.partition).encode()),
        ("origin.offset", str(message.offset).encode()),
    ]


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
        self.send(dlq_topic, message.key, message.value, dlq_headers(message, reason, text))

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
            _exit_worker("Kafka refused a record (%s); exiting without committing", barrier.failed)


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


class TxnWriters(Protocol):
    """Per-partition Kafka transactions (``fraudstream.kafka.txn.TransactionalWriters``; a recording
    stand-in in the agent tests)."""

    async def open(self, partition: int) -> tuple[list[tuple[str, bytes | None]], int | None]:
        """Fence earlier owners; return the committed card records and committed offset."""
        ...

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        """Whether a read_committed reader finds a record in offsets [start, end)."""
        ...

    def send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
        to_partition: int | None = None,
    ) -> None: ...

    async def commit(self, partition: int, next_offset: int | None) -> None: ...

    async def abort(self, partition: int) -> None: ...

    async def close(self, partition: int) -> None: ...


def card_changelog_topic(settings: Settings) -> str:
    return changelog_topic(settings, "card-state")


def _exit_worker(message: str, *args: object, exc_info: bool = False) -> NoReturn:
    """Exit with code 70 without writing more: a restart decides the uncommitted events again
    from the committed offsets."""
    log.critical(message, *args, exc_info=exc_info)
    logging.shutdown()
    os._exit(70)


def _exit_fenced(exc: BaseException) -> NoReturn:
    log.critical("%s", exc)
    logging.shutdown()
    os._exit(75)


class TransactionHandler:
    """Decides batches, exactly once per input partition.

    Each owned partition of `transactions` has an open Kafka transaction holding what its
    events produced since the last commit: decisions, scores and dead letters as they are made;
    the changed card records and the next consumer offset at commit time. Every
    ``commit_interval_ms`` each partition's transaction is committed in the background (the
    other partitions keep deciding; the partition's own new events wait for the commit), and
    whenever Faust commits (timer, rebalance, shutdown) every transaction is; only then do its
    card records count as committed. If Kafka aborts a transaction, its events are decided
    again from the state they first saw; if a newer owner has fenced this worker, it exits
    without writing more. The production path feeds it whole fetches (``divert_records``).
    """

    def __init__(self, fa: FraudApp, writers: TxnWriters) -> None:
        self.fa = fa
        self.s = fa.settings
        self.writers = writers
        self.window_s = self.s.dedup_window_hours * 3600.0
        self.interval_s = self.s.commit_interval_ms / 1000.0
        self.changelog = card_changelog_topic(self.s)
        self.lock = asyncio.Lock()
        self.store = CardStore()
        self.opening: dict[int, asyncio.Task[None]] = {}
        # Per partition, for its open transaction: the events in it (decided again if Kafka
        # aborts it), the next offset to commit, how many sends, and when it began.
        self.inflight: dict[int, list[Any]] = {}
        self.next_offset: dict[int, int] = {}
        self.seq: dict[int, int] = {}
        self.committed_seq: dict[int, int] = {}
        self.began: dict[int, float] = {}
        # partition -> (offset sought back to, when): events past it wait for the refetch
        self.rewinding: dict[int, tuple[int, float]] = {}
        # Commits run in the background, one per partition at a time; while a partition's
        # commit runs, its producer cannot take records, so its new events wait in
        # ``deferred`` (in offset order) and the other partitions keep deciding.
        self.committing: dict[int, asyncio.Task[None]] = {}
        self.deferred: dict[int, list[Any]] = {}
        self._undeferring: set[asyncio.Task[None]] = set()
        self.fence = PauseFence(float(fa.app.conf.broker_session_timeout) * 0.8)
        # Events buffered before a rebalance may belong to partitions given away since; their
        # new owner reads them again from the committed offset. (Off in agent tests, which
        # have no consumer group.)
        self.check_assignment = True

    # --- partitions ------------------------------------------------------------------------

    async def ensure_open(self, partition: int) -> None:
        if self.store.owns(partition):
            return
        task = self.opening.get(partition)
        if task is None:
            task = self.opening[partition] = asyncio.ensure_future(self._open(partition))
        await asyncio.shield(task)

    async def _open(self, partition: int) -> None:
        t0 = time.monotonic()
        try:
            for attempt in range(1, 11):
                try:
                    raw, committed = await self.writers.open(partition)
                    break
                except Fenced as exc:
                    _exit_fenced(exc)
                except BrokerError as exc:
                    if attempt == 10:
                        _exit_worker("cannot open partition %d: %s; exiting", partition, exc)
                    log.warning("opening partition %d: %s; retrying", partition, exc)
                    await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
        finally:
            self.opening.pop(partition, None)
        records: list[tuple[str, engine.CardRecord | None]] = []
        for card, value in raw:
            try:
                records.append((card, None if value is None else engine.record_from_bytes(value)))
            except FraudStreamError:
                # A record this version cannot read must not stall the partition for ever.
                log.exception(
                    "unreadable card record in partition %d; card starts afresh", partition
                )
                records.append((card, None))
        n = self.store.load(partition, records)
        self.inflight[partition] = []
        if committed is not None:
            self.next_offset[partition] = committed
        self.seq[partition] = self.committed_seq[partition] = 0
        self.began[partition] = time.monotonic()
        metrics.CARD_RECORDS.labels(partition=str(partition)).set(n)
        log.info(
            "partition %d opened: earlier owners fenced, %d card records restored in %.2fs",
            partition,
            n,
            time.monotonic() - t0,
        )

    async def on_assigned(self, partitions: set[int]) -> None:
        """After a rebalance: let go of partitions given away (their last transaction was
        committed before the revocation), and open new ones at once, so that an open
        transaction a dead owner left behind is aborted now rather than at its timeout."""
        async with self.lock:
            for p in sorted(self.store.partitions() - partitions):
                await self._settled(p)
                if self.store.owns(p):  # (a fenced commit lets go of its partition itself)
                    await self._let_go(p, abort=self._dirty(p))
        for p in partitions:
            if not self.store.owns(p) and p not in self.opening:
                self.opening[p] = asyncio.ensure_future(self._open(p))

    async def _let_go(self, p: int, *, abort: bool) -> None:
        """Forget partition ``p``. What its open transaction holds was decided after the
        revocation's commit; the new owner decides those events again, so it is aborted."""
        if abort:
            try:
                await self.writers.abort(p)
            except BrokerError as exc:  # fenced by the new owner already: nothing to undo
                log.info("partition %d: %s", p, exc)
        self.store.drop(p)
        for table in (self.inflight, self.next_offset, self.seq, self.committed_seq):
            table.pop(p, None)
        self.deferred.pop(p, None)  # the new owner decides them from the committed offset
        self.rewinding.pop(p, None)
        with contextlib.suppress(KeyError):
            metrics.CARD_RECORDS.remove(str(p))
        await self.writers.close(p)
        log.info("partition %d given away", p)

    def _assigned(self, p: int) -> bool:
        if not self.check_assignment:
            return True
        return any(
            tp.topic == self.s.topic_transactions and tp.partition == p
            for tp in self.fa.app.consumer.assignment()
        )

    # --- deciding --------------------------------------------------------------------------

    async def handle(self, events: Sequence[Any]) -> None:
        async with self.lock:
            assigned = self.fa.app.consumer.assignment() if self.check_assignment else None
            owned = self.store.partitions() | set(self.opening)
            mine = []
            skipped: dict[int, list[int]] = {}
            for ev in events:
                msg = ev.message
                # A partition still held here is decided even while a rebalance is under way:
                # skipping one event of it would let the next committed offset pass it by. If
                # the partition turns out to be given away, its open transaction is aborted and
                # the new owner decides these events from the committed offset.
                if msg.partition in owned or assigned is None or msg.tp in assigned:
                    mine.append(ev)
                    continue
                metrics.REVOKED_SKIPPED.inc()
                skipped.setdefault(msg.partition, []).append(msg.offset)
            for p, offs in skipped.items():
                log.info(
                    "partition %d is not held here: left offsets %d..%d to its owner",
                    p,
                    min(offs),
                    max(offs),
                )
            if not mine:
                return
            parts = {ev.message.partition for ev in mine}
            await asyncio.gather(*(self.ensure_open(p) for p in parts))
            ready = []
            for ev in mine:
                p = ev.message.partition
                if p in self.committing or p in self.deferred:
                    self.deferred.setdefault(p, []).append(ev)
                else:
                    ready.append(ev)
            await self._take(ready)
            self._start_due()

    async def _take(self, events: list[Any]) -> None:
        """Decide events of partitions not committing into their open transactions."""
        if not events:
            return
        events = await self._contiguous(events)
        self._process(events)
        for ev in events:
            p = ev.message.partition
            self.inflight[p].append(ev)
            self.next_offset[p] = max(self.next_offset.get(p, 0), ev.message.offset + 1)

    async def _undefer(self, p: int) -> None:
        """After partition ``p``'s commit: decide the events that waited for it."""
        try:
            async with self.lock:
                if p in self.committing:
                    return  # a newer commit started meanwhile; it will call this again
                events = self.deferred.pop(p, [])
                if events and self.store.owns(p):
                    await self._take(events)
        except Exception:  # noqa: BLE001 - logged with its traceback; the worker exits
            _exit_worker("deciding partition %d's waiting events failed; exiting", p, exc_info=True)

    async def _contiguous(self, events: list[Any]) -> list[Any]:
        """Keep each partition's events gap-free from its next offset.

        The offset committed with a partition's transaction says "every record before this is
        decided". Faust can drop fetched records around a rebalance (its flow-control queues
        are cleared when the flow resumes, after the seek to the committed offset had fetched
        them), so a record may arrive past a hole. A hole holding records (read_committed
        readers see one) is refetched with a seek, and events past it wait for the refetch;
        a hole without records (a transactional producer's commit markers) is accepted.
        """
        out: list[Any] = []
        blocked: set[int] = set()
        nxt: dict[int, int] = {}
        again: dict[int, int] = {}
        for ev in events:
            msg = ev.message
            p = msg.partition
            if p in blocked:
                continue
            expected = nxt.get(p, self.next_offset.get(p))
            if expected is not None and msg.offset < expected:
                # Delivered again (Faust's recovery seeks the stream partitions back to the
                # committed offsets after its fetcher already ran): this record is in a committed
                # transaction or in the open one, whose events are decided again from memory if
                # Kafka aborts it. The card's dedup record forgets ids past its window: never
                # rely on it here.
                again[p] = again.get(p, 0) + 1
                continue
            want = self.rewinding.get(p)
            if want is not None:
                if msg.offset > want[0]:
                    if time.monotonic() - want[1] > 5.0:
                        await self._seek(msg.tp, want[0])  # the refetch was lost too: again
                    continue
                del self.rewinding[p]
            if (
                expected is not None
                and msg.offset > expected
                and (await self.writers.has_records(p, expected, msg.offset))
            ):
                log.warning(
                    "partition %d: offsets %d..%d were not delivered; fetching them again",
                    p,
                    expected,
                    msg.offset - 1,
                )
                metrics.REFETCHES.inc()
                await self._seek(msg.tp, expected)
                blocked.add(p)
                continue
            out.append(ev)
            nxt[p] = max(msg.offset + 1, expected or 0)
        for p, n in again.items():
            log.info("partition %d: %d records delivered again were already decided: dropped", p, n)
        return out

    async def _seek(self, tp: Any, offset: int) -> None:
        self.rewinding[tp.partition] = (offset, time.monotonic())
        if self.check_assignment:
            await self.fa.app.consumer.seek(tp, offset)

    async def decide_now(self, tx: Transaction, raw: bytes, partition: int) -> engine.Result:
        """One transaction from the HTTP API, through exactly the stream's path; answered once
        its transaction is committed."""
        ev = _Anchor(self.s.topic_transactions, partition, raw, tx.card_id.encode())
        while True:
            async with self.lock:
                if not self._assigned(partition):
                    raise BrokerError(
                        f"partition {partition} is not assigned to this worker (a rebalance is "
                        "in progress); retry the request"
                    )
                await self.ensure_open(partition)
                running = self.committing.get(partition)
                if running is None:
                    results = self._decide([tx], [ev])
                    self.inflight[partition].append(ev)
                    upto = self.seq[partition]
                    break
            await asyncio.wait({running})
        # Concurrent requests share one commit.
        while True:
            async with self.lock:
                if self.committed_seq.get(partition, upto) >= upto:
                    return results[0]
                running = self.committing.get(partition) or self._start_commit(partition)
            await asyncio.wait({running})

    def _send(
        self, p: int, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> None:
        self.writers.send(p, topic, key, value, headers)
        self.seq[p] += 1

    def _dead_letter(self, msg: Any, reason: str, text: str) -> None:
        metrics.DEAD_LETTERS.labels(reason=reason, source="transactions").inc()
        self._send(
            msg.partition, self.s.topic_dlq, msg.key, msg.value, dlq_headers(msg, reason, text)
        )

    def _process(self, events: Sequence[Any]) -> None:
        """Decode and decide ``events`` (of open partitions) into their transactions."""
        txs, evs = self._decode(events)
        if not txs:
            return
        try:
            self._decide(txs, evs)
        except FraudStreamError:
            raise
        except Exception:
            # One poisonous transaction must not sink its batch: one at a time.
            log.exception("batch of %d failed; retrying one at a time", len(txs))
            for tx, ev in zip(txs, evs, strict=True):
                try:
                    self._decide([tx], [ev])
                except Exception as exc:  # noqa: BLE001
                    self._dead_letter(ev.message, "scoring_error", repr(exc))

    def _decode(self, events: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        s = self.s
        txs: list[Any] = []
        evs: list[Any] = []
        metrics.TRANSACTIONS.inc(len(events))
        for ev in events:
            msg = ev.message
            try:
                tx = decode_transaction(msg.value, s.max_message_bytes)
                if msg.key != tx.card_id.encode():
                    raise InvalidMessage(
                        "key_mismatch",
                        "the record key must be the transaction's card_id (per-card state is "
                        "partitioned by it); re-publish with key = card_id",
                    )
            except InvalidMessage as exc:
                self._dead_letter(msg, exc.reason, exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - never lose a record to a surprise
                self._dead_letter(msg, "decode_error", repr(exc))
                continue
            txs.append(tx)
            evs.append(ev)
        return txs, evs

    def _decide(self, txs: list[Any], evs: list[Any]) -> list[engine.Result]:
        s = self.s
        part: dict[str, int] = {}
        for tx, ev in zip(txs, evs, strict=True):
            part.setdefault(tx.card_id, ev.message.partition)
        # Work on copies: a batch that fails half-way must not leave half-updated records.
        work: dict[str, engine.CardRecord] = {}
        for card, p in part.items():
            rec = self.store.get(p, card)
            work[card] = (
                engine.CardRecord() if rec is None else engine.CardRecord(rec.state, dict(rec.seen))
            )
        serving = self.fa.serving.current
        assert serving is not None
        results = engine.process_batch(
            serving, txs, work, now_iso=utc_now_iso(), dedup_window_s=self.window_s
        )
        by_id = {id(t): e for t, e in zip(txs, evs, strict=True)}
        wall = time.time()
        # Metrics are counted per batch and label set: per event they cost ~12 µs.
        decided: Counter[tuple[str, str, str]] = Counter()
        scores: dict[tuple[str, str], list[float]] = {}
        latency = metrics.DECISION_LATENCY
        self.fence.check()  # the last moment before anything of this batch is written
        for r in results:
            ev = by_id[id(r.tx)]
            p = ev.message.partition
            if isinstance(r, engine.Scored):
                d = r.decision
                key = d.transaction_id.encode()
                self._send(p, s.topic_decisions, key, encode_decision(d))
                for sc in r.scores:
                    self._send(p, s.topic_scores, key, encode_score(sc))
                    scores.setdefault((sc.model_version, sc.role), []).append(sc.score)
                decided[(d.decision, d.model_version, d.variant)] += 1
                ts = ev.message.timestamp
                if ts:
                    latency.observe(max(0.0, wall - ts))
            elif isinstance(r, engine.Rejected):
                self._dead_letter(ev.message, r.error.reason, r.error.message)
            else:
                metrics.DUPLICATES.inc()
        for (kind, version, variant), n in decided.items():
            metrics.DECISIONS.labels(decision=kind, model_version=version, variant=variant).inc(n)
        for (version, role), values in scores.items():
            histogram = metrics.SCORES.labels(model_version=version, role=role)
            for value in values:
                histogram.observe(value)
        for card, rec in work.items():
            self.store.put(part[card], card, rec)
        return results

    # --- committing ------------------------------------------------------------------------

    def _start_due(self) -> None:
        """Start the commit of every partition whose transaction has been open for the
        interval (call with the lock held)."""
        now = time.monotonic()
        for p in self.store.partitions():
            if (
                p not in self.committing
                and now - self.began.get(p, now) >= self.interval_s
                and self._dirty(p)
            ):
                self._start_commit(p)

    def _start_commit(self, p: int) -> asyncio.Task[None]:
        task = self.committing[p] = asyncio.ensure_future(self._commit_in_background(p))
        return task

    async def _commit_in_background(self, p: int) -> None:
        try:
            await self._commit(p)
        except Exception:  # noqa: BLE001 - logged with its traceback; the worker exits
            # _commit handles what Kafka can answer; anything else is a bug.
            _exit_worker("committing partition %d failed; exiting", p, exc_info=True)
        finally:
            self.committing.pop(p, None)
        if self.deferred.get(p):
            # A task of its own: it takes the lock, which a caller waiting for this commit
            # (a rebalance) may hold.
            task = asyncio.ensure_future(self._undefer(p))
            self._undeferring.add(task)
            task.add_done_callback(self._undeferring.discard)

    async def _settled(self, p: int) -> None:
        """Wait for partition ``p``'s running commit, if any (it does not take the lock)."""
        running = self.committing.get(p)
        if running is not None:
            await asyncio.wait({running})

    def _dirty(self, p: int) -> bool:
        return bool(self.inflight.get(p)) or self.seq.get(p, 0) > self.committed_seq.get(p, 0)

    async def commit_due(self) -> None:
        """Timer: commit partitions whose transaction has been open for the interval."""
        async with self.lock:
            self._start_due()

    async def commit_all(self) -> None:
        """Commit every open transaction, deferred events included (before Faust commits,
        rebalances or stops)."""
        while True:
            running = list(self.committing.values())
            if running:
                await asyncio.wait(running)
            async with self.lock:
                if self.committing:
                    continue  # started while this waited for the lock: wait for it too
                for p in list(self.deferred):
                    events = self.deferred.pop(p)
                    if self.store.owns(p):
                        await self._take(events)
                dirty = [p for p in self.store.partitions() if self._dirty(p)]
                await asyncio.gather(*(self._commit(p) for p in dirty))
                return

    async def _commit(self, p: int) -> None:
        for attempt in range(1, 31):
            upto = self.seq[p]
            for card, rec in self.store.pending(p).items():
                self.writers.send(
                    p, self.changelog, card.encode(), engine.record_to_bytes(rec), None, p
                )
            t0 = time.monotonic()
            try:
                await self.writers.commit(p, self.next_offset.get(p))
            except Fenced as exc:
                if self._assigned(p):
                    _exit_fenced(exc)  # a zombie: the group gave this partition away meanwhile
                # Revoked, and its new owner has opened it already: its events are theirs.
                await self._let_go(p, abort=False)
                return
            except TransactionAborted as exc:
                metrics.TXN_ABORTS.inc()
                log.warning("%s (attempt %d)", exc, attempt)
                try:
                    await self.writers.abort(p)
                except Fenced as fenced:
                    _exit_fenced(fenced)
                except BrokerError as failed:
                    # Kafka is still away: exit without writing more; a restarted worker
                    # fences this transaction and decides its events from the committed offset.
                    _exit_worker("%s; exiting", failed)
                self.store.abort(p)
                # The aborted transaction's events, decided again into the next one.
                self._process(self.inflight[p])
                await asyncio.sleep(min(5.0, 0.2 * attempt))  # Kafka may be restarting
                continue
            log.debug(
                "partition %d committed: next offset %s, %d events",
                p,
                self.next_offset.get(p),
                len(self.inflight[p]),
            )
            metrics.TXN_COMMIT_SECONDS.observe(time.monotonic() - t0)
            metrics.TXN_COMMITS.inc()
            self.store.commit(p)
            self.inflight[p] = []
            self.committed_seq[p] = upto
            self.began[p] = time.monotonic()
            metrics.CARD_RECORDS.labels(partition=str(p)).set(self.store.size(p))
            return
        _exit_worker("partition %d: Kafka aborted 30 transactions in a row; exiting", p)


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
        # Offsets of decisions/feedback are committed from here, not from Faust's ack tracking.
        self.offsets: InOrderOffsets[Any] = InOrderOffsets()

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
        for ev in events:
            self.offsets.handled(ev.message.tp, ev.message.offset)

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


class _Record:
    """A fetched record of `transactions`, as the scoring path reads it: event and message in
    one object (``handle`` reads ``event.message``)."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "tp", "value")

    def __init__(self, tp: Any, record: Any) -> None:
        self.tp = tp
        self.topic = tp.topic
        self.partition = tp.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value
        ts = record.timestamp
        self.timestamp = None if ts is None else ts / 1000.0

    @property
    def message(self) -> _Record:
        return self


def divert_records(consumer: Any, topic: str) -> asyncio.Queue[list[Any]]:
    """Take ``topic``'s records from Faust's consumer a fetch at a time, before Faust delivers
    them one by one; returns the feed they arrive on (the same feed on every call, so that an
    agent Faust restarts drains what the earlier one left).

    Faust hands every record to its agent separately (an ``asyncio.wait`` of two tasks, an
    event, a stream queue and a take-buffer step each): that cost as much CPU per transaction
    as deciding it (docs/benchmark.md). The scoring path needs none of it. It keeps its own
    offsets, committed in its transactions, and orders and checks each partition's records
    itself (``TransactionHandler._contiguous``). Faust still owns the group membership, the
    assignment, the fetching and the rebalance protocol; records fetched while its flow is
    stopped for a rebalance are dropped, as Faust drops its own, and fetched again after the
    seek to the committed offsets. A full feed holds the fetch loop (back-pressure)."""
    existing: asyncio.Queue[list[Any]] | None = getattr(consumer, "_fraudstream_feed", None)
    if existing is not None:
        return existing
    feed: asyncio.Queue[list[Any]] = asyncio.Queue(maxsize=2)
    fetch = consumer._wait_next_records

    async def wait_next_records(timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109 - Faust's
        records, active = await fetch(timeout)
        if records:
            mine = [tp for tp in records if tp.topic == topic]
            batch = [
                _Record(tp, rec)
                for tp in mine
                for rec in records.pop(tp)
                if active is None or tp in active
            ]
            if batch and consumer.flow_active:
                await feed.put(batch)
        return records, active

    setattr(consumer, "_wait_next_records", wait_next_records)  # noqa: B010
    setattr(consumer, "_fraudstream_feed", feed)  # noqa: B010
    return feed


async def decide_batches(
    feed: asyncio.Queue[list[Any]], handler: TransactionHandler, batch_size: int
) -> None:
    """Decide what ``divert_records`` feeds, in batches of at most ``batch_size``. A failure
    here is a bug, not bad input (that is dead-lettered inside ``handle``): the worker exits,
    and its restart decides the uncommitted events again from the committed offsets."""
    pending: list[Any] = []
    try:
        while True:
            if not pending:
                pending = await feed.get()
            while len(pending) < batch_size and not feed.empty():
                pending.extend(feed.get_nowait())
            batch, pending = pending[:batch_size], pending[batch_size:]
            await handler.handle(batch)
    except Exception:  # noqa: BLE001 - logged with its traceback; the worker exits
        _exit_worker("deciding transactions failed; exiting", exc_info=True)


def install(fa: FraudApp, output: Output | None = None, writers: TxnWriters | None = None) -> None:
    app = fa.app
    s = fa.settings
    if writers is None:
        from fraudstream.kafka.txn import TransactionalWriters

        writers = TransactionalWriters(s, card_changelog_topic(s))
    join_out = output or Output(s)
    tx_handler = TransactionHandler(fa, writers)
    join_handler = JoinHandler(fa, join_out)
    # How long the agent's stream gathers a batch. Only what Faust delivers itself takes this
    # path (records fetched before the diversion was in place, and agent tests).
    within = 0.005

    def hook_commit() -> None:
        """Before Faust commits offsets (timer, rebalance, shutdown) it flushes its producer:
        make that commit the scoring transactions and wait for the join's outputs first. The
        offsets of `transactions` are committed inside the scoring transactions only."""
        producer = app.producer
        if getattr(producer, "_fraudstream_hooked", False):
            return
        original = producer.flush

        async def flush_outputs_first() -> None:
            if "score" in s.role_set:
                await tx_handler.commit_all()
            await join_out.flush()
            await original()

        # An instance attribute shadows the method: Faust's commit path calls producer.flush().
        setattr(producer, "flush", flush_outputs_first)  # noqa: B010
        setattr(producer, "_fraudstream_hooked", True)  # noqa: B010
        consumer: Any = app.consumer
        commit_offsets = consumer._commit

        async def commit_all_but_transactions(offsets: Any) -> bool:
            rest = {tp: o for tp, o in offsets.items() if tp.topic != s.topic_transactions}
            return bool(await commit_offsets(rest)) if rest else True

        setattr(consumer, "_commit", commit_all_but_transactions)  # noqa: B010
        faust_new_offset = consumer._new_offset

        def join_new_offset(tp: Any) -> int | None:
            # Faust counts acknowledged offsets and stalls on the holes commit markers leave in
            # a transactional topic; the join handles each partition in order, so it knows.
            if tp.topic not in join_topic_names:
                return cast("int | None", faust_new_offset(tp))
            offset = join_handler.offsets.committable(tp, consumer._committed_offset.get(tp))
            if offset is not None:
                consumer._acked[tp].clear()
                consumer._acked_index[tp].clear()
            return offset

        setattr(consumer, "_new_offset", join_new_offset)  # noqa: B010

    async def score_transactions(stream: Any) -> None:
        hook_commit()
        feed = divert_records(app.consumer, s.topic_transactions)
        decide_fed = asyncio.ensure_future(decide_batches(feed, tx_handler, s.batch_size))
        try:
            # Only what Faust delivered before the diversion (and agent tests) comes this way.
            async for events in stream.take_events(s.batch_size, within):
                await tx_handler.handle(events)
        finally:
            decide_fed.cancel()

    async def on_assigned(_sender: Any, assigned: Any, **_kw: Any) -> None:
        await tx_handler.on_assigned(
            {tp.partition for tp in assigned if tp.topic == s.topic_transactions}
        )

    async def refresh_producer_metadata(_sender: Any, _assigned: Any, **_kw: Any) -> None:
        # After partitions were added, Faust's producer can still hold the old count and
        # refuse a table's changelog record for a new partition ("Unrecognized partition"),
        # which crashes the worker. A rebalance follows every partition change: refresh there.
        client = getattr(getattr(app.producer, "_producer", None), "client", None)
        if client is not None:
            try:
                await client.force_metadata_update()
            except Exception:  # best effort; the next rebalance tries again
                log.warning("could not refresh the producer's metadata", exc_info=True)

    app.on_partitions_assigned.connect(cast(Any, refresh_producer_metadata))

    async def watch_for_pauses() -> None:
        tx_handler.fence.tick()

    async def commit_quiet_partitions() -> None:
        await tx_handler.commit_due()

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
        app.timer(interval=max(0.1, tx_handler.interval_s))(commit_quiet_partitions)
        app.on_partitions_assigned.connect(cast(Any, on_assigned))
    if "join" in s.role_set:
        app.agent(join_topics, name="join-feedback")(join_feedback)
        app.timer(interval=s.metrics_publish_seconds)(publish_metrics)
        app.timer(interval=max(1.0, s.feedback_grace_seconds / 10))(sweep_held_labels)

    join_topic_names = {s.topic_decisions, s.topic_feedback}

    async def restart_join_offsets(_sender: Any, _assigned: Any, **_kw: Any) -> None:
        # Faust seeks every assigned partition to its committed offset: first records again.
        join_handler.offsets.clear()

    async def check_join_heads() -> None:
        """Before the join commits past the first record it got after an assignment or a
        seek, check the offsets between the group's committed offset and that record: commit
        markers only, or records Faust fetched and never delivered (it clears stream buffers
        when the flow resumes after a rebalance). Records are fetched again (the join is
        idempotent); the join's commits wait until then."""
        heads = join_handler.offsets.to_verify()
        if not heads:
            return
        loop = asyncio.get_running_loop()
        tps = list(heads)
        try:
            committed = await loop.run_in_executor(
                None,
                group_committed_offsets,
                s,
                s.app_id,
                [(tp.topic, tp.partition) for tp in tps],
            )
        except BrokerError as exc:  # the broker may be away; the next tick tries again
            log.warning("%s", exc)
            return
        consumer: Any = app.consumer
        for tp in tps:
            first = heads[tp]
            start = committed.get((tp.topic, tp.partition))
            if start is None or first <= start:
                join_handler.offsets.verified(tp, first)
                continue
            missing = await loop.run_in_executor(
                None, has_committed_records, s, tp.topic, tp.partition, start, first
            )
            if not missing:
                join_handler.offsets.verified(tp, first)
                continue
            log.warning(
                "%s[%d]: offsets %d..%d were never delivered; fetching them again",
                tp.topic,
                tp.partition,
                start,
                first - 1,
            )
            metrics.REFETCHES.inc()
            join_handler.offsets.reset(tp)
            if tp in consumer.assignment():
                await consumer.seek(tp, start)

    if "join" in s.role_set:
        app.on_partitions_assigned.connect(cast(Any, restart_join_offsets))
        app.timer(interval=1.0)(check_join_heads)

    @app.timer(interval=1.0)
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
            if tp.topic == s.topic_transactions:
                # The scoring path keeps its own position: the next offset to decide.
                nxt = tx_handler.next_offset.get(tp.partition)
                pos = None if nxt is None else nxt - 1
            else:
                pos = read.get(tp)
            if high is not None and pos is not None:
                metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - pos - 1)
                )

    fa.output = join_out
    fa.writers = writers
    fa.tx_handler = tx_handler
    fa.join_handler = join_handler
