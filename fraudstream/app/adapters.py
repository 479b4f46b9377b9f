"""Our ports over Faust's public objects: the coordinator's ``Source`` and ``Clock``, the join's
``JoinTable`` and ``JoinSource``. Thin on purpose: what they may touch of Faust's internals goes
through ``faust_boundary``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

from faust.types import TP

from fraudstream.app import faust_boundary
from fraudstream.app.joinheads import TopicPartition
from fraudstream.kafka.clients import has_committed_records
from fraudstream.settings import Settings


class KafkaSource:
    """The coordinator's input (``ports.Source``) over Faust's consumer."""

    def __init__(self, app: Any, topic: str, settings: Settings) -> None:
        self.app, self.topic, self.s = app, topic, settings

    def assigned(self, partition: int) -> bool:
        return TP(self.topic, partition) in self.app.consumer.assignment()

    async def seek(self, partition: int, offset: int) -> None:
        await self.app.consumer.seek(TP(self.topic, partition), offset)

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        found: bool = await asyncio.get_running_loop().run_in_executor(
            None, has_committed_records, self.s, self.topic, partition, start, end
        )
        return found


class Clock:
    monotonic = staticmethod(time.monotonic)


class FaustTable:
    """A Faust table as the join's ``JoinTable``: each access names its partition."""

    def __init__(self, table: Any, topic: str) -> None:
        self.table, self.topic = table, topic

    def get(self, partition: int, key: bytes) -> bytes | None:
        with faust_boundary.table_partition(self.topic, partition):
            got: bytes | None = self.table.get(key)
            return got

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        with faust_boundary.table_partition(self.topic, partition):
            self.table[key] = value

    def delete(self, partition: int, key: bytes) -> None:
        with faust_boundary.table_partition(self.topic, partition):
            self.table.pop(key, None)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self.table.items():
            yield bytes(k), bytes(v)


class JoinInputs:
    """The join's input topics on Faust's consumer (``join.JoinSource``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def partitions(self, topic: str) -> int | None:
        n: int | None = self.app.consumer.topic_partitions(topic)
        return n

    def assigned(self, tp: TopicPartition) -> bool:
        return TP(*tp) in self.app.consumer.assignment()

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        await self.app.consumer.seek(TP(*tp), offset)

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        consumer = self.app.consumer
        consumer.pause_partitions({TP(*tp) for tp in tps} & consumer.assignment())

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        if self.app.in_recovery:
            return  # Faust resumes what it assigned when its recovery ends
        consumer = self.app.consumer
        consumer.resume_partitions({TP(*tp) for tp in tps} & consumer.assignment())
