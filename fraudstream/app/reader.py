"""A reader of one input topic for a coordinator, outside Faust's consumer: a confluent-kafka
consumer of its own, assigned (no group membership) the partitions the coordinator holds, from
the positions its owner says. Every call on the consumer runs on one thread (librdkafka
consumers are not to be shared across threads).

Used by the feedback mover (``fraudstream.app.mover``, the coordinator's ``ports.Source``) and by
the scoring path for transactions moved to their card's partition (``fraudstream.app.scoring``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fraudstream.app import metrics
from fraudstream.core.records import Record
from fraudstream.kafka.clients import fetched, has_committed_records, make_consumer
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.reader")

#: The most records the consumer returns at a time, and how long it waits for the first one (it
#: then takes what else is fetched already: ``consume(n, t)`` alone waits for ``n`` records or
#: ``t``, which at a modest rate added up to ``t`` to every record's latency).
READ_BATCH, READ_WAIT_S = 500, 0.1

#: partition -> (a token that changes when the partition is taken again, the offset to read from
#: then; None: the start of the log)
Wanted = dict[int, tuple[object, int | None]]


class AssignedReader:
    """Reads ``topic``'s partitions in ``wanted()`` and hands each fetch to ``deliver``. A
    partition whose token changed (let go and opened again) is read again from its new
    position; ``seek`` moves one."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group_id: str,
        wanted: Callable[[], Wanted],
        deliver: Callable[[list[Record]], Awaitable[None]],
        *,
        report_lag: bool = True,
    ) -> None:
        self.s = settings
        self.topic = topic
        self.group_id = group_id  # never joined; librdkafka wants one
        self._wanted = wanted
        self._deliver = deliver
        self._seeks: dict[int, int] = {}
        self._reading: dict[int, object] = {}
        self._shown: set[int] = set()  # partitions with a lag gauge
        self.report_lag = report_lag  # False: another reader of the topic reports it
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fraudstream-reader")

    async def seek(self, partition: int, offset: int) -> None:
        self._seeks[partition] = offset  # applied before the next read

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        found: bool = await asyncio.get_running_loop().run_in_executor(
            None, has_committed_records, self.s, self.topic, partition, start, end
        )
        return found

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def run(self) -> None:
        """Read and deliver, for ever (cancelled when the worker stops)."""
        consumer: Consumer = await self._call(make_consumer, self.s, self.group_id)
        loop = asyncio.get_running_loop()
        measured = 0.0
        try:
            while True:
                wanted = self._wanted()
                if self._seeks or self._changed(wanted):
                    seeks, self._seeks = self._seeks, {}
                    await self._call(self._follow, consumer, wanted, seeks)
                if self.report_lag and loop.time() - measured >= 1.0:
                    measured = loop.time()
                    await self._call(self._measure_lag, consumer)
                if not self._reading:
                    await asyncio.sleep(READ_WAIT_S)
                    continue
                records = await self._call(self.take, consumer)
                if records:
                    await self._deliver(records)
        finally:
            await self._call(consumer.close)
            self._thread.shutdown(wait=False)

    def _changed(self, wanted: Wanted) -> bool:
        """Whether ``wanted`` differs from what is read (a thread hop saved per fetch if not)."""
        reading = self._reading
        return len(wanted) != len(reading) or any(
            reading.get(p, self) is not token for p, (token, _) in wanted.items()
        )

    def take(self, consumer: Consumer) -> list[Record]:
        """Wait for the first record, then take what else is fetched already, as records (on
        the reader's thread)."""
        records = []
        for msg in fetched(consumer, READ_BATCH, READ_WAIT_S):
            err = msg.error()
            if err is not None:
                log.warning("reading %s: %s", self.topic, err.str())
                continue
            ts = msg.timestamp()[1]
            records.append(
                Record(
                    self.topic,
                    int(msg.partition() or 0),
                    int(msg.offset() or 0),
                    msg.key(),
                    msg.value(),
                    None if ts < 0 else ts / 1000.0,
                )
            )
        return records

    def _measure_lag(self, consumer: Consumer) -> None:
        """``fraudstream_consumer_lag`` of the partitions read here (Faust's consumer reports
        its own): records behind the end, from the last fetch's high watermark."""
        for p in self._shown - set(self._reading):
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.topic, str(p))
        self._shown &= set(self._reading)
        if not self._reading:
            return
        tps = consumer.position([TopicPartition(self.topic, p) for p in self._reading])
        for tp in tps:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                metrics.CONSUMER_LAG.labels(self.topic, str(tp.partition)).set(
                    max(0, high - tp.offset)
                )
                self._shown.add(tp.partition)

    def _follow(self, consumer: Consumer, wanted: Wanted, seeks: dict[int, int]) -> None:
        """Assign the wanted partitions from their positions (or where they were sought to),
        and let go of the others."""
        gone = [p for p, token in self._reading.items() if wanted.get(p, (None,))[0] is not token]
        if gone:
            consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
            for p in gone:
                del self._reading[p]
        for p, (token, nxt) in wanted.items():
            start = seeks.get(p)
            if p in self._reading and start is None:
                continue
            if p in self._reading:
                consumer.incremental_unassign([TopicPartition(self.topic, p)])
            if start is None:
                start = OFFSET_BEGINNING if nxt is None else nxt
            consumer.incremental_assign([TopicPartition(self.topic, p, start)])
            self._reading[p] = token
