"""The foundation: a real broker takes topics, records and a committed transaction."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer

from fraudstream.kafka.admin import create_topics, describe_topics
from fraudstream.settings import Settings

pytestmark = pytest.mark.integration


def test_create_produce_consume_and_commit_a_transaction(broker_settings: Settings) -> None:
    created = create_topics(broker_settings)
    assert broker_settings.topic_transactions in created
    described = {name: (have, want) for name, have, want in describe_topics(broker_settings)}
    assert described[broker_settings.topic_transactions] == (2, 2)
    assert described[broker_settings.topic_control] == (1, 1)

    conf = broker_settings.kafka_client_config()
    producer = Producer({**conf, "transactional.id": f"t-{uuid.uuid4()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(broker_settings.topic_transactions, key=f"card-{i}", value=f"v{i}")
    producer.commit_transaction(30)

    # An aborted transaction is invisible to read_committed consumers.
    producer.begin_transaction()
    producer.produce(broker_settings.topic_transactions, key="card-x", value="aborted")
    producer.abort_transaction(30)

    consumer = Consumer(
        {
            **conf,
            "group.id": f"g-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([broker_settings.topic_transactions])
    seen: list[bytes] = []
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                if len(seen) >= 10:
                    break
                continue
            seen.append(msg.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sorted(seen) == sorted(f"v{i}".encode() for i in range(10))
