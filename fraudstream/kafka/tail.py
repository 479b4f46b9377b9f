"""Follow a topic and print its records readably."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import make_consumer
from fraudstream.settings import Settings


def render(msg: object) -> str:
    key = msg.key()  # type: ignore[attr-defined]
    value = msg.value()  # type: ignore[attr-defined]
    head = f"{msg.topic()}[{msg.partition()}]@{msg.offset()} key={key!r}"  # type: ignore[attr-defined]
    try:
        body = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, TypeError):
        body = repr(value[:200] if value else value)
    headers = msg.headers() or []  # type: ignore[attr-defined]
    extra = "".join(f"\n  {k}: {v.decode(errors='replace')}" for k, v in headers)
    return f"{head}{extra}\n{body}"


def follow(
    settings: Settings,
    topic: str,
    from_beginning: bool,
    max_messages: int,
    idle_timeout: float,
    echo: Callable[[str], None],
) -> int:
    consumer = make_consumer(settings, group_id=f"fraudstream-tail-{uuid.uuid4().hex[:8]}")
    try:
        md = consumer.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise BrokerError(
                f"Topic {topic!r} does not exist on {settings.kafka_bootstrap}. Create the topics "
                "with `fraudstream topics create` (names are set by FRAUD_TOPIC_* settings)."
            )
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in t.partitions])
        shown = 0
        last = time.monotonic()
        while True:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if idle_timeout and time.monotonic() - last > idle_timeout:
                    return shown
                continue
            last = time.monotonic()
            echo(render(msg))
            shown += 1
            if max_messages and shown >= max_messages:
                return shown
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
