"""A consumer group's committed offsets, read without joining the group: ``Consumer.committed``
on a consumer of that group id that never subscribes, one per application, cluster and group,
kept for the process's life.

Not the admin API's ``list_consumer_group_offsets`` (what this replaced): librdkafka answers
its OffsetFetch response with the consumer's own handler, which on NOT_COORDINATOR and the
like asks the client's consumer group to look for the coordinator again; an admin client has
no consumer group, and the process dies (SIGSEGV in ``rdk:main`` reading NULL + 0x58, the
offset of ``rkcg_ops`` in ``rd_kafka_cgrp_t``: librdkafka 2.15.1 and 2.16.0,
``rd_kafka_handle_OffsetFetch`` → ``rd_kafka_cgrp_op``). That is what killed the worker in the
broker fault scenario: the coordinator answers NOT_COORDINATOR while it loads after a restart,
and the join asks for the group's offsets every second. ``tests/kafka/test_groupoffsets.py``
reproduces it with a broker of its own.

Not a consumer per call either: a short-lived consumer carrying the worker's group id was
measured to slow the worker's read_committed fetches to about one per second for the rest of
its life (librdkafka 2.12, Kafka 4.1); this one is made once.
"""

from __future__ import annotations

import threading

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import make_consumer
from fraudstream.settings import Settings


class OffsetsReader:
    """One group's committed offsets, through one consumer of that group that never joins."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None

    def __call__(
        self, tps: list[tuple[str, int]], timeout: float
    ) -> dict[tuple[str, int], int | None]:
        with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(self.settings, group_id=self.group_id)
            try:
                got = self._consumer.committed(
                    [TopicPartition(t, p) for t, p in tps], timeout=timeout
                )
            except KafkaException as exc:
                raise BrokerError(
                    f"reading group {self.group_id!r}'s committed offsets failed: {exc}; "
                    "check that the broker is reachable"
                ) from exc
        return {
            (str(tp.topic), int(tp.partition)): (int(tp.offset) if tp.offset >= 0 else None)
            for tp in got
        }


_readers: dict[tuple[str, str, frozenset[tuple[str, str]]], OffsetsReader] = {}
_readers_lock = threading.Lock()


def group_committed_offsets(
    settings: Settings, group_id: str, tps: list[tuple[str, int]], *, timeout: float = 10.0
) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets (None where it has none), read without joining it."""
    key = (settings.app_id, group_id, frozenset(settings.kafka_client_config().items()))
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = OffsetsReader(settings, group_id)
    return reader(tps, timeout)
