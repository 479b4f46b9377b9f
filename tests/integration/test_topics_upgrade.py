"""Outcome topics keep their records as long as labels can change them, on new clusters
(`topics create`) and on clusters made by earlier releases (`topics upgrade`); readers that must
see a topic whole fail loudly instead of returning part of it (real broker)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from fraudstream.errors import ReadIncomplete
from fraudstream.kafka.admin import config_drift, create_topics, upgrade_topics
from fraudstream.kafka.clients import read_all
from fraudstream.settings import Settings

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000


def retention(s: Settings, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    deadline = time.monotonic() + 30
    while True:  # a topic created a moment ago may not be known to describe_configs yet
        (fut,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
        try:
            return str(fut.result()["retention.ms"].value)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def outcome_topics(s: Settings) -> list[str]:
    return [
        s.topic_outcomes,
        s.topic_false_positives,
        s.topic_false_negatives,
        s.topic_feedback_dlq,
    ]


def test_create_sets_the_outcome_topics_retention_to_the_horizon(
    broker_settings: Settings,
) -> None:
    s = broker_settings.model_copy(update={"decision_retention_days": 120.0})
    create_topics(s)
    for topic in outcome_topics(s):
        assert retention(s, topic) == str(120 * DAY_MS), topic
    assert config_drift(s) == []


def test_upgrade_alters_a_cluster_made_by_an_earlier_release(broker_settings: Settings) -> None:
    s = broker_settings
    # What releases before this one created: the outcome topics with the broker's default.
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    old = [NewTopic(t, s.partitions, 1) for t in outcome_topics(s)]
    for fut in admin.create_topics(old, operation_timeout=30).values():
        fut.result()
    assert retention(s, s.topic_outcomes) == str(7 * DAY_MS)
    before = {c.topic for c in config_drift(s)}
    assert set(outcome_topics(s)) <= before

    created, changes = upgrade_topics(s)
    assert s.topic_transactions in created  # missing topics are created too
    assert {c.topic for c in changes} == set(outcome_topics(s))
    assert all(c.key == "retention.ms" and c.after == str(90 * DAY_MS) for c in changes)
    deadline = time.monotonic() + 30  # altered configs reach describe_configs a bit later
    while config_drift(s) and time.monotonic() < deadline:
        time.sleep(0.2)
    for topic in outcome_topics(s):
        assert retention(s, topic) == str(90 * DAY_MS), topic
    assert upgrade_topics(s) == ([], [])  # idempotent


def test_read_all_reads_what_is_committed_or_refuses_to_return_part(
    broker_settings: Settings,
) -> None:
    s = broker_settings
    create_topics(s)
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "transactional.id": uuid.uuid4().hex})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(2000):
        p.produce(s.topic_outcomes, key=b"k", value=b"committed-%d" % i, partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()  # left open: not committed, so not part of what is read
    p.produce(s.topic_outcomes, key=b"b", value=b"open", partition=0)
    p.flush(10)
    got = read_all(s, [s.topic_outcomes], timeout=30)
    assert len(got) == 2000
    assert b"open" not in {m.value() for m in got}

    # A deadline that passes before the end is reached: an error naming what is missing.
    with pytest.raises(ReadIncomplete) as err:
        read_all(s, [s.topic_outcomes], timeout=0.001)
    assert set(err.value.behind) <= {(s.topic_outcomes, 0), (s.topic_outcomes, 1)}
    assert err.value.behind
    assert "try again" in str(err.value)
    p.abort_transaction(30)
