"""At-least-once writers (``FRAUD_PROCESSING_GUARANTEE=at_least_once``): the coordinator's
``ports.Writers`` without Kafka transactions, for latency-critical deployments.

Decisions, scores and dead letters are sent the moment they are made, by one idempotent
producer per worker. Every commit interval all owned partitions commit together
(``shared = True``): first every record sent before the commit began is acknowledged by the
broker, then the changed card records are written to the changelog and acknowledged, and only
then are the input offsets committed, through the consumer group's own member
(``commit_offsets``: a worker the group no longer counts as the owner is refused, as a zombie
must be). Records are decided while a commit runs (``overlaps = True``): what they change is
the next commit's (``ports.Sealing``).

So nothing is lost: an offset is committed only once everything decided before it, and the
card state that remembers it, is in the log. After a crash, or a failed delivery, the records
since the last committed offset are decided again: their decisions may appear twice, with the
same ``transaction_id`` key (downstream deduplicates by key), and the duplicates are counted by
the fault suite. A card record can be ahead of the offsets it goes with (written, then the
crash before the offset commit): its dedup record then marks the records decided again as
duplicates, which were already delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from fraudstream.coordinator.ports import Restored
from fraudstream.errors import TransactionAborted
from fraudstream.kafka.clients import make_producer, produce
from fraudstream.kafka.restore import read_partition
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.alo")

#: How long a commit waits for the broker to acknowledge what was sent before it gives up
#: (and the coordinator decides the interval's records again).
FLUSH_S = 30.0

CommitOffsets = Callable[[Mapping[int, int]], Awaitable[None]]


class Acks:
    """Which sends the broker has acknowledged, by sequence number, and who waits for them.

    Delivery callbacks run on the producer's poll thread, in any order across partitions;
    ``low`` is the first sequence number not acknowledged yet (everything before it is)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.low = 0
        self._above: set[int] = set()  # acknowledged, past ``low``
        self.failure: str | None = None  # the first failed delivery since the last commit
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def next(self) -> int:
        with self.lock:
            seq = self.sent
            self.sent += 1
            return seq

    def done(self, seq: int, err: KafkaError | None) -> None:
        with self.lock:
            if err is not None and self.failure is None:
                self.failure = err.str()
            if seq == self.low:
                self.low += 1
                while self.low in self._above:
                    self._above.remove(self.low)
                    self.low += 1
            else:
                self._above.add(seq)

    def wait(self) -> asyncio.Future[None]:
        """Done once everything sent so far is acknowledged; fails if a delivery failed."""
        fut = asyncio.get_running_loop().create_future()
        with self.lock:
            target = self.sent
            if self.failure is None and self.low >= target:
                fut.set_result(None)
            else:
                self._waiters.append((target, fut))
        return fut

    def ready(self) -> list[tuple[asyncio.Future[None], str | None]]:
        """The waiters that can be answered now (poll thread), with the failure if any."""
        with self.lock:
            if not self._waiters:
                return []
            failure = self.failure
            out = [(f, failure) for t, f in self._waiters if failure or self.low >= t]
            if out:
                self._waiters = [(t, f) for t, f in self._waiters if not (failure or self.low >= t)]
            return out


def _answer(fut: asyncio.Future[None], failure: str | None) -> None:
    if fut.done():
        return
    if failure is None:
        fut.set_result(None)
    else:
        fut.set_exception(
            TransactionAborted(f"Kafka refused a decision ({failure}); it is decided again")
        )


class AtLeastOnceWriters:
    """``ports.Writers`` for at-least-once: see the module docstring."""

    shared = True
    overlaps = True  # a commit covers what was sent before it began; records go on meanwhile

    def __init__(
        self,
        settings: Settings,
        changelog_topic: str,
        commit_offsets: CommitOffsets,
        *,
        input_topic: str | None = None,
    ) -> None:
        self.s = settings
        self.changelog_topic = changelog_topic
        self.input_topic = input_topic or settings.topic_transactions
        self.commit_offsets = commit_offsets
        self.acks = Acks()
        self.producer: Producer = make_producer(
            settings,
            **{
                "linger.ms": settings.produce_linger_ms,
                "queue.buffering.max.messages": 500_000,
                "message.max.bytes": 10_485_760,  # a dead letter carries the original record
            },
        )
        self._keep: dict[int, dict[bytes, bytes | None]] = {}  # state records for the commit
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fraudstream-alo")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # --- delivery reports ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._poller is None:
            self._loop = asyncio.get_running_loop()
            self._poller = threading.Thread(target=self._poll, name="fraudstream-alo", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            self.producer.poll(0.05)
            ready = self.acks.ready()
            if ready:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_settle_all, ready)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        seq = self.acks.next()
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            self.acks.done(seq, err)

        # A full queue waits: the poll thread frees room as deliveries come back.
        produce(
            self.producer,
            topic,
            value=value,
            key=key,
            headers=cast("Any", headers),
            on_delivery=delivered,
            **extra,
        )

    # --- ports.Writers ----------------------------------------------------------------------

    async def open(self, partition: int) -> Restored:
        """No earlier owner to fence (its late writes are duplicates, which at-least-once
        allows): read the partition's state and committed offset."""
        self._start()
        restored, _ = await asyncio.get_running_loop().run_in_executor(
            self._pool, read_partition, self.s, self.changelog_topic, self.input_topic, partition
        )
        self._keep[partition] = {}
        return restored

    def send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        to_partition: int | None = None,
    ) -> None:
        self._produce(topic, key, value, headers, to_partition)

    def keep(self, partition: int, key: bytes, value: bytes | None) -> None:
        # Written at the commit, once the decisions it remembers are acknowledged.
        self._keep.setdefault(partition, {})[key] = value

    def delivered(self) -> Awaitable[None]:
        """Done once everything sent so far is acknowledged by the broker."""
        return self.acks.wait()

    async def _acknowledged(self, sent: asyncio.Future[None]) -> None:
        self._start()
        try:
            await asyncio.wait_for(sent, FLUSH_S)
        except TimeoutError:
            raise TransactionAborted(
                f"the broker did not acknowledge the decisions sent in {FLUSH_S:.0f}s; the "
                "records since the last committed offsets are decided again"
            ) from None
        except TransactionAborted:
            with self.acks.lock:
                self.acks.failure = None
            raise

    async def commit(self, positions: Mapping[int, int | None]) -> None:
        # The commit covers what was sent before it began: the coordinator goes on deciding
        # while it runs (``overlaps``), and those records are the next commit's.
        self._start()
        sent = self.acks.wait()
        keep = {p: self._keep.get(p, {}) for p in positions}
        for partition in positions:
            self._keep[partition] = {}
        await self._acknowledged(sent)
        for partition, records in keep.items():
            for key, value in records.items():
                self._produce(self.changelog_topic, key, value, None, partition)
        await self._acknowledged(self.acks.wait())
        moved = {p: o for p, o in positions.items() if o is not None}
        if moved:
            await self.commit_offsets(moved)

    async def abort(self, partitions: Sequence[int]) -> None:
        # What was sent cannot be undone (at least once); the state records are not written.
        for partition in partitions:
            self._keep[partition] = {}

    async def close(self, partition: int) -> None:
        self._keep.pop(partition, None)

    def close_all(self) -> None:
        self._stop.set()
        self.producer.flush(5.0)
        self._pool.shutdown(wait=False)


def _settle_all(ready: list[tuple[asyncio.Future[None], str | None]]) -> None:
    for fut, failure in ready:
        _answer(fut, failure)
