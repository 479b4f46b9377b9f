"""Committed offsets through one long-lived consumer per group
(fraudstream/kafka/groupoffsets.py), against a stand-in consumer here; across a real broker
restart in tests/integration/test_groupoffsets_restart.py."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from fraudstream.errors import BrokerError
from fraudstream.kafka import groupoffsets
from fraudstream.settings import Settings


class FakeConsumer:
    def __init__(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        self.group_id = group_id
        self.offsets = offsets
        self.asked: list[list[tuple[str, int]]] = []
        self.fail = False

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked.append([(tp.topic, tp.partition) for tp in tps])
        if self.fail:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))  # noqa: SLF001
        get = self.offsets.get
        return [
            TopicPartition(tp.topic, tp.partition, get((tp.topic, tp.partition), -1001))
            for tp in tps
        ]


@pytest.fixture
def consumers(monkeypatch: pytest.MonkeyPatch) -> list[FakeConsumer]:
    made: list[FakeConsumer] = []

    def make(settings: Settings, group_id: str | None = None, **_: Any) -> FakeConsumer:
        made.append(FakeConsumer(str(group_id), {("tx", 0): 7}))
        return made[-1]

    monkeypatch.setattr(groupoffsets, "make_consumer", make)
    monkeypatch.setattr(groupoffsets, "_readers", {})
    return made


def test_offsets_come_back_with_none_where_the_group_has_none(
    consumers: list[FakeConsumer],
) -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1", app_id="a")
    got = groupoffsets.group_committed_offsets(s, "g", [("tx", 0), ("tx", 1)])
    assert got == {("tx", 0): 7, ("tx", 1): None}
    assert [c.group_id for c in consumers] == ["g"]


def test_one_consumer_per_group_kept_for_the_process(consumers: list[FakeConsumer]) -> None:
    """A consumer per call with the worker's group id slowed its fetches (measured): made once."""
    s = Settings(kafka_bootstrap="127.0.0.1:1", app_id="a")
    for _ in range(3):
        groupoffsets.group_committed_offsets(s, "g", [("tx", 0)])
    groupoffsets.group_committed_offsets(s, "h", [("tx", 0)])
    assert [c.group_id for c in consumers] == ["g", "h"]
    assert len(consumers[0].asked) == 3


def test_a_broker_that_does_not_answer_is_a_broker_error(consumers: list[FakeConsumer]) -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1", app_id="a")
    groupoffsets.group_committed_offsets(s, "g", [("tx", 0)])
    consumers[0].fail = True
    with pytest.raises(BrokerError, match="check that the broker is reachable"):
        groupoffsets.group_committed_offsets(s, "g", [("tx", 0)])
    consumers[0].fail = False  # the same consumer answers again once the broker is back
    assert groupoffsets.group_committed_offsets(s, "g", [("tx", 0)]) == {("tx", 0): 7}
    assert len(consumers) == 1
