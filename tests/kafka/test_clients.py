"""The committed-records probe on a real broker: a hole of commit markers or aborted records
holds nothing, a hole of committed records holds something, and one consumer answers every
question."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from fraudstream.kafka import clients
from fraudstream.kafka.admin import create_topics
from fraudstream.settings import Settings
from tests.fakes import FetchingConsumer


def _write_transactions(s: Settings, topic: str) -> list[int]:
    """Three transactions on partition 0: committed (k0), aborted (k1), committed (k2).
    The offsets of the readable records, in order."""
    p = clients.make_producer(s, **{"transactional.id": f"{s.app_id}-probe-test"})
    p.init_transactions(30)
    for key, commit in (("k0", True), ("k1", False), ("k2", True)):
        p.begin_transaction()
        p.produce(topic, key=key, value=b"v", partition=0)
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    c = clients.make_consumer(s, group_id=f"{s.app_id}-reader")
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got: list[int] = []
        while len(got) < 2:
            got += [m.offset() or 0 for m in c.consume(10, 1.0) if m.error() is None]
        return got
    finally:
        c.close()


def test_probe_tells_markers_and_aborted_records_from_records(
    broker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = broker_settings
    create_topics(s)
    topic = s.topic_transactions
    first, second = _write_transactions(s, topic)
    # Between the two committed records: k0's commit marker, k1 and its abort marker.
    assert second - first == 4
    made: list[Consumer] = []
    real = clients.make_consumer

    def counting(*args: object, **kw: object) -> Consumer:
        c = real(*args, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    monkeypatch.setattr(clients, "make_consumer", counting)
    probe = clients.CommittedProbe(s)
    try:
        assert not probe(topic, 0, first + 1, second)  # markers and aborted records only
        assert probe(topic, 0, first, second)  # k0 itself
        assert probe(topic, 0, first + 1, second + 1)  # k2
        assert not probe(
            topic, 0, second + 1, second + 5, timeout=1.0
        )  # past the end: nothing readable
        assert not probe(topic, 1, 0, 10, timeout=1.0)  # another, empty partition
    finally:
        probe.close()
    assert len(made) == 1


def test_fetched_waits_for_the_first_message_only_then_takes_what_is_there() -> None:
    consumer = FetchingConsumer(["a", "b", "c"])
    assert clients.fetched(consumer, 10, 0.05) == ["a", "b", "c"]  # type: ignore[arg-type]
    assert consumer.calls == [("poll", 0.05), ("consume", 9, 0)]
    assert clients.fetched(FetchingConsumer(["a", "b"]), 1, 0.05) == ["a"]  # type: ignore[arg-type]
    idle = FetchingConsumer([])
    assert clients.fetched(idle, 10, 0.05) == []  # type: ignore[arg-type]
    assert idle.calls == [("poll", 0.05)]
