"""The join's producer: outcomes, FP/FN copies, per-version counts and dead letters, produced
without waiting and acknowledged in batches (``Output.checkpoint`` / ``Barrier``) before the
join commits its offsets. (The scoring path writes through its transactions instead:
``fraudstream.kafka.txn``.)"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException

from fraudstream.app import metrics
from fraudstream.core.records import Record, dead_letter_headers
from fraudstream.errors import OutputRefused
from fraudstream.kafka.clients import make_producer, produce
from fraudstream.settings import Settings


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
    """One confluent-kafka producer; a background thread serves its delivery callbacks so that
    no coroutine blocks on the broker."""

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

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        barrier = self._barrier
        barrier.add()
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        try:
            produce(
                self.producer,
                topic,
                value=value,
                key=key,
                headers=cast("Any", headers),
                on_delivery=barrier,
                **extra,
            )
        except KafkaException as exc:
            barrier(exc.args[0], None)  # never sent: the barrier must not wait for it
            raise

    def dead_letter(self, topic: str, record: Record, reason: str, text: str, source: str) -> None:
        metrics.DEAD_LETTERS.labels(reason=reason, source=source).inc()
        self.send(topic, record.key, record.value, dead_letter_headers(record, reason, text))

    def checkpoint(self) -> Barrier:
        """Close the records sent so far into a barrier; later sends start a new one."""
        closed, self._barrier = self._barrier, Barrier()
        return closed.close(asyncio.get_running_loop())

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged (before offsets are committed).
        A record Kafka refused for good raises ``OutputRefused``: nothing may be acked past it,
        so that a restarted worker handles it again instead of losing it."""
        barrier = self.checkpoint()
        await barrier.wait()
        if barrier.failed is not None:
            raise OutputRefused(f"Kafka refused a record: {barrier.failed}")
