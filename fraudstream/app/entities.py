"""Every scoring worker's copy of the entity state: a follower of the compacted
``<app>-entity-state`` topic (the ``fraud.control`` follower's pattern: its own consumer, every
partition assigned, no group, ``read_committed``), and the scoring path's gate.

The follower keeps ``key -> bytes`` (decoded on use, through a small cache) and each partition's
watermark map; its watermark is their minimum (``core.entitylog.combined``). A restart reads the
topic again from its start: that is the recovery. ``ready`` is set once every partition was read
to its end once (the worker's readiness waits for it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from fraudstream.app import metrics
from fraudstream.core import entity, entitylog
from fraudstream.core.entity import EntityKey, EntityState
from fraudstream.errors import BrokerError, FraudStreamError
from fraudstream.kafka.admin import entity_state_topic
from fraudstream.kafka.clients import PARTITION_EOF, fetched, make_consumer
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.entities")

CACHE_SIZE = 4096  # decoded states kept (hot merchants); the rest stay as bytes
SOURCES_EVERY_S = 10.0  # how often the follower looks for partitions added by a scale-out


class EntityFollower:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.topic = entity_state_topic(settings)
        self.raw: dict[str, bytes] = {}
        self.marks: dict[int, dict[str, float]] = {}
        self.partitions = 0  # of the entity topics
        self.sources: list[str] = []  # the sources every partition must report (transactions)
        self.watermark = entitylog.NEVER
        self.ready = threading.Event()
        self.loaded_in_s: float | None = None
        self.bytes = 0
        self._cache: OrderedDict[str, tuple[bytes, EntityState]] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        # Called (on the reader thread) when the watermark moves: wakes parked partitions at
        # once instead of at the next commit tick.
        self.on_advance: Callable[[], None] | None = None

    # --- the lookup the engine reads (event loop) ------------------------------------------

    def get(self, key: EntityKey) -> EntityState | None:
        raw = self.raw.get(key)
        if raw is None:
            return None
        hit = self._cache.get(key)
        if hit is not None and hit[0] is raw:
            self._cache.move_to_end(key)
            return hit[1]
        try:
            state = EntityState.from_bytes(raw)
        except FraudStreamError:
            log.exception("unreadable entity state %r; taken as unknown", key)
            return None
        self._cache[key] = (raw, state)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return state

    # --- the reader thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fraudstream-entities", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:
            self.failed = exc
            log.exception("the entity-state follower stopped")

    def check(self) -> None:
        """Raise what stopped the follower (the supervisor's tick calls this)."""
        if self.failed is not None:
            raise BrokerError(f"the entity-state follower of {self.topic!r} stopped: {self.failed}")

    def _metadata(self, consumer: object, attempts: int = 120) -> tuple[int, int, int]:
        for _ in range(attempts):
            try:
                md = consumer.list_topics(timeout=10)  # type: ignore[attr-defined]
            except KafkaException as exc:
                log.warning("entity-state follower: %s", exc)
                time.sleep(0.5)
                continue
            state, txs, fb = (
                md.topics.get(t)
                for t in (self.topic, self.s.topic_transactions, self.s.topic_feedback)
            )
            if all(t is not None and not t.error for t in (state, txs, fb)):
                return len(state.partitions), len(txs.partitions), len(fb.partitions)
            time.sleep(0.5)
        raise BrokerError(
            f"topic {self.topic!r}, {self.s.topic_transactions!r} or {self.s.topic_feedback!r} "
            "does not exist: create the topics with `fraudstream topics create`"
        )

    def _follow(self) -> None:
        t0 = time.monotonic()
        consumer = make_consumer(
            self.s,
            group_id=f"{self.s.app_id}-entities",
            **{"enable.partition.eof": True, "fetch.wait.max.ms": 20},
        )
        try:
            n, ntx, nfb = self._metadata(consumer)
            self.partitions = n
            # Every transactions partition and every feedback partition (the join's labels)
            # must report: a source not heard from yet could still send what a cutoff needs.
            self.sources = [entitylog.tx_source(p) for p in range(ntx)] + [
                entitylog.feedback_source(p) for p in range(nfb)
            ]
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(n)])
            at_end: set[int] = set()
            looked = time.monotonic()
            while not self._stop.is_set():
                moved = False
                if time.monotonic() - looked >= SOURCES_EVERY_S:
                    looked = time.monotonic()
                    moved = self._more_sources(consumer)
                for msg in fetched(consumer, 10_000, 0.05):  # the first at once
                    err, part = msg.error(), msg.partition() or 0
                    if err is not None:
                        if err.code() == PARTITION_EOF:
                            at_end.add(part)
                            continue
                        raise BrokerError(f"reading {self.topic!r}: {err.str()}")
                    moved |= self._apply(part, msg.key(), msg.value())
                if moved:
                    self._refresh()
                if not self.ready.is_set() and len(at_end) == n:
                    self.loaded_in_s = time.monotonic() - t0
                    log.info(
                        "entity state loaded: %d entities, %d bytes in %.2fs",
                        len(self.raw),
                        self.bytes,
                        self.loaded_in_s,
                    )
                    self.ready.set()
                if self.watermark > entitylog.NEVER:
                    metrics.ENTITY_WATERMARK_LAG.set(max(0.0, time.time() - self.watermark))
        finally:
            consumer.close()

    def _more_sources(self, consumer: object) -> bool:
        """Take in the partitions `fraudstream topics scale` added to ``transactions`` and
        ``fraud.feedback``: each is a source to wait for from now on (it reports within seconds
        of being assigned)."""
        try:
            _n, ntx, nfb = self._metadata(consumer, attempts=1)
        except BrokerError:  # looked at again next time
            return False
        more = [entitylog.tx_source(p) for p in range(ntx)] + [
            entitylog.feedback_source(p) for p in range(nfb)
        ]
        if len(more) <= len(self.sources):
            return False
        log.info("entity watermark: %d sources now (topics were scaled)", len(more))
        self.sources = more
        return True

    def _apply(self, partition: int, key: bytes | None, value: bytes | None) -> bool:
        if key is None:
            return False
        if key == entitylog.WATERMARK_KEY:
            self.marks[partition] = entitylog.decode_marks(value)
            return True
        k = key.decode("utf-8", "replace")
        old = self.raw.pop(k, None) if value is None else self.raw.get(k)
        if old is not None:
            self.bytes -= len(old)
        if value is not None:
            self.raw[k] = value
            self.bytes += len(value)
        return False

    def _refresh(self) -> None:
        was = self.watermark
        self.watermark = entitylog.combined(self.marks, self.partitions, self.sources)
        if self.watermark > was and self.on_advance is not None:
            self.on_advance()
        metrics.ENTITY_TABLE_SIZE.set(len(self.raw))
        metrics.ENTITY_TABLE_BYTES.set(self.bytes)


#: How often a partition that gave up waiting for the watermark reads a transaction's time to
#: see whether the watermark caught up (``Gate.open_untimed``).
RECHECK_S = 1.0


class Gate:
    """The scoring path's wait (design point 4): a transaction at ``t`` is scored once the
    follower's watermark reaches ``required(t, now)``. After ``max_wait_s`` of waiting the
    partition scores with the state it has (counted, logged): a stalled aggregator or join
    must not stop scoring for good."""

    def __init__(self, follower: EntityFollower, max_wait_s: float) -> None:
        self.follower = follower
        self.max_wait_s = max_wait_s
        self.parked: dict[int, tuple[float, float]] = {}  # partition -> (event ts, since)
        # Gave up waiting (partition -> when it last read a transaction's time): open until the
        # watermark catches up with a transaction's time, read at most every ``RECHECK_S``.
        self.degraded: dict[int, float] = {}

    def live(self) -> bool:
        """The watermark is at the clock's cutoff: every transaction not dated ahead passes."""
        return self.follower.watermark >= entity.cutoff(time.time())

    def open_untimed(self, partition: int) -> bool:
        """Open for any transaction of ``partition``, its time unread: the watermark is live, the
        wait is off, or the partition gave up waiting and read a time less than ``RECHECK_S``
        ago. Reading the time decodes the record: for every record of a worker whose aggregator
        is down, that was 26 % of its event loop at 2,000 tx/s."""
        if self.live() or self.max_wait_s == 0:
            return True
        looked = self.degraded.get(partition)
        return looked is not None and time.monotonic() - looked < RECHECK_S

    def open_for(self, partition: int, ts: float | None) -> bool:
        now = time.time()
        wm = self.follower.watermark
        if ts is None or wm >= entitylog.required(ts, now):
            self.parked.pop(partition, None)
            self.degraded.pop(partition, None)
            return True
        if self.max_wait_s == 0:
            return True
        if partition in self.degraded:
            self.degraded[partition] = time.monotonic()
            return True
        parked = self.parked.get(partition)
        if parked is None or parked[0] != ts:
            if parked is None:
                metrics.GATE_WAITS.inc()
            self.parked[partition] = parked = (
                ts,
                time.monotonic() if parked is None else parked[1],
            )
        if time.monotonic() - parked[1] >= self.max_wait_s:
            metrics.GATE_TIMEOUTS.inc()
            log.warning(
                "partition %d waited %.0fs for the entity watermark (at %s, needs %s): scoring "
                "with the state it has; check the aggregator and the join",
                partition,
                self.max_wait_s,
                "never" if math.isinf(wm) else f"{wm:.0f}",
                f"{entitylog.required(ts, now):.0f}",
            )
            self.parked.pop(partition, None)
            self.degraded[partition] = time.monotonic()
            return True
        return False

    def waiting_at(self, partition: int) -> float | None:
        got = self.parked.get(partition)
        return None if got is None else got[0]
