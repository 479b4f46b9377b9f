"""Publish and read the live routing on the compacted control topic."""

from __future__ import annotations

from fraudstream.core.messages import Routing, decode_routing, encode_routing
from fraudstream.core.routing import validate_routing
from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.settings import Settings

ROUTING_KEY = b"routing"


def publish_routing(settings: Settings, routing: Routing) -> None:
    validate_routing(routing)
    # Every worker decodes it against fraudstream/schemas/routing.json: refuse here what they
    # would refuse.
    value = encode_routing(routing)
    decode_routing(value)
    producer = make_producer(settings)
    producer.produce(settings.topic_control, key=ROUTING_KEY, value=value)
    if producer.flush(30) != 0:
        raise BrokerError("The routing change was not acknowledged by Kafka within 30 s.")


def latest_routing(settings: Settings) -> Routing | None:
    """The newest routing on the control topic, or None if nobody has published one."""
    latest: Routing | None = None
    for msg in read_all(settings, [settings.topic_control], timeout=15, idle=1.0):
        if msg.key() == ROUTING_KEY and msg.value():
            latest = decode_routing(msg.value())
    return latest


def startup_routing(settings: Settings) -> Routing:
    """Routing from settings, used until the control topic says otherwise."""
    return Routing(
        champion=settings.champion,
        challenger=settings.challenger,
        challenger_share=settings.challenger_share if settings.challenger else 0.0,
        shadow=settings.shadow,
        salt=settings.routing_salt,
        updated_at="",
    )
