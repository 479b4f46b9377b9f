"""The scoring path's per-partition Kafka transactions against a real broker: a new owner
fences the old one, reads back only committed card state, and the offset moves with the
outputs in one transaction."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import TopicPartition

from fraudstream.app.wiring import card_changelog_topic
from fraudstream.errors import Fenced
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_consumer, read_all
from fraudstream.kafka.txn import TransactionalWriters
from fraudstream.settings import Settings

pytestmark = pytest.mark.integration


def _committed_offset(settings: Settings, partition: int) -> int:
    consumer = make_consumer(settings, group_id=settings.app_id)
    try:
        [tp] = consumer.committed(
            [TopicPartition(settings.topic_transactions, partition)], timeout=10
        )
        return int(tp.offset)
    finally:
        consumer.close()


def test_a_new_owner_fences_the_old_and_sees_only_what_it_committed(
    broker_settings: Settings,
) -> None:
    s = broker_settings
    create_topics(s)
    changelog = card_changelog_topic(s)

    async def body() -> None:
        old = TransactionalWriters(s, changelog)
        new = TransactionalWriters(s, changelog)
        try:
            assert await old.open(0) == ([], 0)  # never committed: from the log's start
            old.send(0, s.topic_decisions, b"tx-1", b"committed")
            old.keep(0, b"card-a", b"state-1")
            await old.commit({0: 7})
            assert _committed_offset(s, 0) == 7

            # The old owner carries on, then freezes with its transaction open.
            old.send(0, s.topic_decisions, b"tx-2", b"zombie")
            old.keep(0, b"card-a", b"state-2-uncommitted")
            await asyncio.sleep(0.5)  # let the records reach the broker

            # The new owner opens the partition: the old transaction is aborted, and only the
            # committed state comes back.
            restored = await new.open(0)
            assert restored == ([(b"card-a", b"state-1")], 7)

            # The frozen owner wakes up and tries to commit: refused.
            with pytest.raises(Fenced, match="Another worker now owns this partition"):
                await old.commit({0: 9})
            assert _committed_offset(s, 0) == 7

            new.send(0, s.topic_decisions, b"tx-2", b"new-owner")
            new.keep(0, b"card-a", b"state-2")
            await new.commit({0: 9})
            assert _committed_offset(s, 0) == 9

            # An aborted transaction leaves nothing either.
            new.send(0, s.topic_decisions, b"tx-3", b"aborted")
            await new.abort([0])
        finally:
            new.close_all()
            old.close_all()

    asyncio.run(body())
    seen = [(m.key(), m.value()) for m in read_all(s, [s.topic_decisions])]
    assert sorted(seen) == [(b"tx-1", b"committed"), (b"tx-2", b"new-owner")]
    state = [(m.key(), m.value()) for m in read_all(s, [changelog])]
    assert state == [(b"card-a", b"state-1"), (b"card-a", b"state-2")]
