"""``app.reader.AssignedReader``: on a real broker it reads the partitions its owner wants from
the positions it says, hands each fetch over as records, follows a seek and a partition taken
again, and lets go of a partition no longer wanted; a read waits for the first record only,
never for a full batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from fraudstream.app.reader import READ_BATCH, READ_WAIT_S, AssignedReader, Wanted
from fraudstream.core.records import Record
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from tests.fakes import FetchingConsumer


async def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.integration
def test_reads_what_its_owner_wants_from_where_it_says(broker_settings: Settings) -> None:
    s = broker_settings
    topic = s.topic_transactions
    create_topics(s)
    producer = make_producer(s)

    def send(part: int, i: int) -> None:
        producer.produce(topic, key=b"k", value=f"{part}-{i}".encode(), partition=part)
        assert producer.flush(30) == 0

    for part in (0, 1):
        for i in range(5):
            send(part, i)

    got: list[Record] = []
    wanted: Wanted = {0: (object(), 2)}

    async def deliver(records: list[Record]) -> None:
        got.extend(records)

    reader = AssignedReader(s, topic, f"{s.app_id}-test", lambda: dict(wanted), deliver)

    def seen() -> list[tuple[int, int]]:
        return sorted((r.partition, r.offset) for r in got)

    async def body() -> None:
        task = asyncio.ensure_future(reader.run())
        try:
            await _until(lambda: len(got) >= 3, "partition 0 from offset 2")
            assert [(r.partition, r.offset, r.value) for r in got] == [
                (0, o, f"0-{o}".encode()) for o in (2, 3, 4)
            ]

            got.clear()  # partition 1 wanted from its start; partition 0 sought back to 3
            wanted[1] = (object(), None)
            await reader.seek(0, 3)
            await _until(lambda: len(got) >= 7, "the seek and the new partition")
            assert seen() == [(0, 3), (0, 4)] + [(1, o) for o in range(5)]

            got.clear()  # partition 0 let go: a record written to it now is not read
            del wanted[0]
            for i in (5, 6):  # two reads of partition 1: the reader looked at wanted between
                send(1, i)
                await _until(lambda i=i: (1, i) in seen(), f"record 1-{i}")
            send(0, 5)
            send(1, 7)
            await _until(lambda: (1, 7) in seen(), "record 1-7")
            assert seen() == [(1, 5), (1, 6), (1, 7)]

            got.clear()  # partition 0 taken again (a new token) from offset 4
            wanted[0] = (object(), 4)
            await _until(lambda: len(got) >= 2, "partition 0 taken again")
            assert seen() == [(0, 4), (0, 5)]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(body())


class _Message:
    def __init__(self, partition: int, offset: int) -> None:
        self.p, self.o = partition, offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self.o)

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


def test_a_read_waits_for_the_first_record_then_takes_what_is_fetched_already(
    settings: Settings,
) -> None:
    reader = AssignedReader(settings, "tx", "g", dict, lambda _r: asyncio.sleep(0))
    consumer = FetchingConsumer([_Message(0, 7), _Message(1, 3), _Message(0, 8)])
    records = reader.take(consumer)  # type: ignore[arg-type]
    # ``consume(n, t)`` alone would wait for n records or t: at a modest rate, t per record.
    assert consumer.calls == [("poll", READ_WAIT_S), ("consume", READ_BATCH - 1, 0)]
    assert [(r.partition, r.offset, r.timestamp) for r in records] == [
        (0, 7, 1_700_000_000.007),
        (1, 3, 1_700_000_000.003),
        (0, 8, 1_700_000_000.008),
    ]
    assert reader.take(FetchingConsumer([])) == []  # type: ignore[arg-type]
