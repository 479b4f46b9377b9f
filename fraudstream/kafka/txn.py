"""Kafka transactions per input partition: the exactly-once unit of the scoring path.

Every partition of `transactions` a worker owns gets its own transactional producer,
``transactional.id = "<app id>-score-<partition>"``. Opening a partition calls
``init_transactions``, which fences every earlier holder of that id (a worker that was frozen,
partitioned away or killed) and makes the coordinator abort whatever it left open; only then is
the partition's card state read back, with ``read_committed``, from its changelog. Decisions,
scores, dead letters, the changed card records and the consumer offset of the partition then
go in one transaction: all of them are visible to ``read_committed`` readers, or none.

The consumer offset is committed with the group id but without a generation (the pre-KIP-447
form, as Faust and Kafka Streams' first exactly-once mode do): fencing comes from the
per-partition transactional id, not from the group generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from fraudstream.coordinator.ports import Restored
from fraudstream.errors import BrokerError, Fenced, TransactionAborted
from fraudstream.kafka import lanes
from fraudstream.kafka.clients import (
    FENCED_CODES,
    make_consumer,
    make_producer,
    produce,
)
from fraudstream.kafka.lanes import Lanes, Stuck
from fraudstream.kafka.restore import committed_offset, read_partition
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.txn")


def transactional_id(settings: Settings, partition: int, role: str = "score") -> str:
    return f"{settings.app_id}-{role}-{partition}"


def _classify(exc: KafkaException, what: str, partition: int) -> BrokerError:
    err: KafkaError = exc.args[0]
    text = f"{what} of partition {partition}'s transaction failed: {err.str()}"
    if err.code() in FENCED_CODES:
        return Fenced(
            f"{text}. Another worker now owns this partition (this one was frozen, cut off or "
            "replaced); this worker stops so that only the new owner writes."
        )
    if err.fatal():
        # Not fenced, but this producer can do nothing more (seen: INVALID_TXN_STATE when
        # aborting after the broker was killed and restarted mid-commit): replace it.
        return _Broken(f"{text}; the producer is replaced")
    if err.txn_requires_abort():
        return TransactionAborted(f"{text}; the transaction is aborted and its events retried")
    return BrokerError(f"{text}; check that the broker is reachable")


class PartitionWriter:
    """One input partition's transactional producer. Blocking calls; run them off the loop."""

    def __init__(self, settings: Settings, partition: int, txn_id: str) -> None:
        self.partition = partition
        self.timeout_s = settings.transaction_timeout_ms / 1000.0
        self.producer: Producer = make_producer(
            settings,
            **{
                "transactional.id": txn_id,
                "transaction.timeout.ms": settings.transaction_timeout_ms,
                # A record not delivered in time fails its transaction (abort + retry), never
                # disappears on its own.
                "message.timeout.ms": max(1000, settings.transaction_timeout_ms - 5000),
                "linger.ms": settings.produce_linger_ms,
                # The coordinator answers CONCURRENT_TRANSACTIONS to the next transaction's
                # first request while the last one's markers are being written; librdkafka
                # retries that after retry.backoff.ms (default 100 ms), which made every
                # commit cycle cost ~120 ms (measured; 10 ms → ~30 ms). The Java producer
                # retries this after 20 ms for the same reason. Backoff still grows
                # exponentially to retry.backoff.max.ms while the broker is away.
                "retry.backoff.ms": 10,
                "queue.buffering.max.messages": 500_000,
                # A dead letter carries the original record, which the broker already accepted.
                "message.max.bytes": 10_485_760,
            },
        )

    def begin(self) -> None:
        try:
            self.producer.init_transactions(self.timeout_s)
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise _classify(exc, "opening", self.partition) from exc

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if headers is not None:
            extra["headers"] = headers
        try:
            produce(self.producer, topic, value=value, key=key, **extra)
        except KafkaException as exc:
            # Typed: a producer the partition's new owner fenced answers "fatal" here (seen in
            # the scale 1→2→1 scenario, writing a commit's watermark after the rebalance).
            raise _classify(exc, "writing into", self.partition) from exc

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, 10.0)
            self.producer.commit_transaction(10.0)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.retriable() and not err.fatal():
                # Retrying the same call after a transport failure was seen to block for good
                # (librdkafka 2.x, broker restarted mid-commit); abort and decide again instead.
                log.warning("commit of partition %d: %s", self.partition, err.str())
                raise TransactionAborted(
                    f"committing partition {self.partition}'s transaction failed: {err.str()}; "
                    "it is aborted and its events decided again"
                ) from exc
            raise _classify(exc, "committing", self.partition) from exc
        self._begin_next()

    def abort(self) -> None:
        # One call, never resumed: calling abort_transaction again after it timed out while the
        # broker was away, then the broker coming back, crashed librdkafka 2.12 (SIGSEGV in
        # rdk:main, seen twice in the broker fault scenario; confluent-kafka-python #1393).
        # A producer that cannot abort is replaced instead (TransactionalWriters._finish).
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            raise _classify(exc, "aborting", self.partition) from exc
        self._begin_next()

    def _begin_next(self) -> None:
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise _classify(exc, "beginning", self.partition) from exc

    def close(self) -> None:
        # Nothing uncommitted is left when a partition is closed (the rebalance committed it);
        # an empty open transaction needs no abort.
        try:
            self.producer.flush(5.0)
        except KafkaException as exc:  # fenced meanwhile: nothing of ours is left to deliver
            log.info("closing partition %d's producer: %s", self.partition, exc)


class TransactionalWriters:
    """The worker's transactional producers, one per owned input partition, driven from
    asyncio: blocking librdkafka calls run on a small thread pool. The coordinator's
    ``ports.Writers``: each partition commits on its own (``shared = False``)."""

    shared = False
    overlaps = False  # a producer takes no record while it commits

    def __init__(
        self,
        settings: Settings,
        changelog_topic: str | None,
        *,
        input_topic: str | None = None,
        role: str = "score",
        group_id: str | None = None,
        fence: Callable[[], None] = lambda: None,
    ) -> None:
        self.s = settings
        # The pause fence, asked before every init_transactions: a worker frozen past its
        # session must not fence the partition's new owner when it wakes up (seen: SIGSTOP).
        self.fence = fence
        self.changelog_topic = changelog_topic  # None: a handler without state
        self.input_topic = input_topic or settings.topic_transactions
        self.role = role
        # The group whose offsets the transactions commit: the worker's own, unless the input
        # is also read by another part of the worker in that group (the feedback mover).
        self.group_id = group_id or settings.app_id
        self._writers: dict[int, PartitionWriter] = {}
        self._positions: dict[int, int | None] = {}  # the last input offset committed
        self._retired: list[PartitionWriter] = []  # replaced producers, never called again
        self._pool = ThreadPoolExecutor(
            max_workers=min(16, max(2, settings.partitions)), thread_name_prefix="fraudstream-txn"
        )
        self._group_metadata: Any = None
        self._lanes = Lanes("fraudstream-txn")

    def _new_writer(self, partition: int) -> PartitionWriter:
        return PartitionWriter(self.s, partition, transactional_id(self.s, partition, self.role))

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _run_bounded(self, partition: int, fn: Any, *args: Any) -> None:
        """Run a transaction call on the partition's lane (``lanes.Lanes``). A stuck call is
        left behind on its thread and its producer replaced: a new producer with the same
        transactional id fences the stuck one, so that its transaction is either committed or
        aborted by the coordinator by the time this raises ``Stuck``."""
        try:
            await self._lanes.call(partition, fn, *args)
        except Stuck:
            log.error(
                "partition %d: a transaction call is stuck after %.0fs; replacing the producer",
                partition,
                lanes.STUCK_S,
            )
            await self._replace(partition)
            raise

    async def _replace(self, partition: int) -> None:
        """A new producer for the partition; its init_transactions fences the old one (whose
        open transaction the transaction coordinator then aborts) and waits for the broker.
        The old one is never called again, nor destroyed on the event loop (destroying a
        producer waits for its broker threads): it stays in ``_retired``."""
        self.fence()
        old = self._writers.pop(partition, None)
        if old is not None:
            self._retired.append(old)
        writer = self._new_writer(partition)
        await self._run(writer.begin)
        self._writers[partition] = writer

    def _metadata(self) -> Any:
        if self._group_metadata is None:
            # The group id alone (generation -1): see the module docstring.
            probe = make_consumer(self.s, group_id=self.group_id)
            try:
                self._group_metadata = probe.consumer_group_metadata()
            finally:
                probe.close()
        return self._group_metadata

    async def open(self, partition: int) -> Restored:
        """Fence earlier owners of ``partition``, begin its transaction, and return its
        committed state records and the group's committed offset (read after the fencing, so
        no earlier owner's transaction can still move it), or the log's start without one."""
        self.fence()
        old = self._writers.pop(partition, None)
        if old is not None:
            await self._run(old.close)
        writer = self._new_writer(partition)
        await self._run(writer.begin)
        self._writers[partition] = writer
        restored, committed = await self._run(
            read_partition,
            self.s,
            self.changelog_topic,
            self.input_topic,
            partition,
            self.group_id,
        )
        self._positions[partition] = committed
        return restored

    def _committed_offset(self, partition: int) -> int | None:
        return committed_offset(self.s, self.input_topic, partition, self.group_id)

    def send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        to_partition: int | None = None,
    ) -> None:
        self._writers[partition].send(topic, key, value, headers, to_partition)

    def delivered(self) -> None:
        return None  # what was sent is visible once its transaction commits

    def keep(self, partition: int, key: bytes, value: bytes | None) -> None:
        # The state of input partition p lives in partition p of its changelog.
        if self.changelog_topic is None:
            raise ValueError(f"{self.role}: these writers keep no state (no changelog topic)")
        self._writers[partition].send(self.changelog_topic, key, value, None, partition)

    async def commit(self, positions: Mapping[int, int | None]) -> None:
        """Commit one partition's transaction. If it fails (other than fenced), the transaction
        is brought to an end (aborted, or its producer replaced, which fences it) and the
        group's committed offset says whether it went through after all; if not, this raises
        ``TransactionAborted`` with a new transaction begun."""
        if len(positions) != 1:
            raise ValueError(f"one partition per transaction here, got {sorted(positions)}")
        [(partition, next_offset)] = positions.items()
        writer = self._writers[partition]
        offsets = (
            []
            if next_offset is None
            else [TopicPartition(self.input_topic, partition, next_offset)]
        )
        metadata = await self._run(self._metadata) if offsets else None
        try:
            await self._run_bounded(partition, writer.commit, offsets, metadata)
        except (TransactionAborted, Stuck, _Broken) as exc:
            # No abort on a producer whose commit failed (see PartitionWriter.abort): a new one
            # fences it, and the coordinator aborts what it left open.
            if not isinstance(exc, Stuck):
                await self._replace(partition)
            # A commit whose answer was lost (the broker died mid-call, the call got stuck)
            # may have gone through: deciding its records again would decide them twice.
            before = self._positions.get(partition)
            now = await self._run(self._committed_offset, partition)
            if next_offset is None or next_offset == before or now != next_offset:
                raise TransactionAborted(
                    f"partition {partition}'s commit failed ({exc}); it is aborted and its "
                    "records are decided again"
                ) from exc
            log.warning("partition %d: the commit went through after all (%s)", partition, exc)
        if next_offset is not None:
            self._positions[partition] = next_offset

    async def abort(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            await self._finish(partition)

    async def _finish(self, partition: int) -> None:
        """Abort the open transaction and begin the next; a producer that cannot is replaced
        (the new one's init_transactions fences it and aborts what it left open)."""
        try:
            await self._run_bounded(partition, self._writers[partition].abort)
        except Stuck:
            pass  # replaced already
        except Fenced:
            raise
        except BrokerError as exc:  # broken, or in a state that cannot abort
            log.warning("partition %d: %s; replacing its producer", partition, exc)
            await self._replace(partition)

    async def close(self, partition: int) -> None:
        self._positions.pop(partition, None)
        self._lanes.retire(partition)
        writer = self._writers.pop(partition, None)
        if writer is not None:
            await self._run(writer.close)

    def close_all(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._lanes.retire_all()
        self._pool.shutdown(wait=False)


class _Broken(BrokerError):
    """A producer hit a fatal error other than being fenced: it must be replaced."""
