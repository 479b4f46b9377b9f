"""Publish and read the live controls on the compacted control topic: the routing (key
``routing``), the decision policy (key ``policy``) and the rules (key ``rules``).

Compaction keeps only the newest record of a key, so every policy and rule set is also written
under its own key (``policy@<version>``, ``rules@<version>``): those are never overwritten and
make ``history``. Workers follow the plain keys only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from confluent_kafka import Message

from fraudstream.core.messages import Routing, decode_routing, encode_routing
from fraudstream.core.policy import NO_POLICY, Policy, decode_policy, encode_policy
from fraudstream.core.routing import validate_routing
from fraudstream.core.rules import NO_RULES, RuleSet, decode_rules, encode_rules
from fraudstream.errors import BrokerError, InvalidMessage
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.control")
T = TypeVar("T")
V = TypeVar("V", Policy, RuleSet)

ROUTING_KEY = b"routing"
POLICY_KEY = b"policy"
RULES_KEY = b"rules"


@dataclass(frozen=True, slots=True)
class Controls:
    """Everything the control topic says, newest of each key (None / version 0: nothing yet)."""

    routing: Routing | None = None
    policy: Policy = NO_POLICY
    rules: RuleSet = NO_RULES


def _produce(settings: Settings, records: list[tuple[bytes, bytes]], what: str) -> None:
    producer = make_producer(settings)
    for key, value in records:
        producer.produce(settings.topic_control, key=key, value=value)
    if producer.flush(30) != 0:
        raise BrokerError(f"The {what} change was not acknowledged by Kafka within 30 s.")


def publish_routing(settings: Settings, routing: Routing) -> None:
    validate_routing(routing)
    # Every worker decodes it against fraudstream/schemas/routing.json: refuse here what they
    # would refuse.
    value = encode_routing(routing)
    decode_routing(value)
    _produce(settings, [(ROUTING_KEY, value)], "routing")


def publish_policy(settings: Settings, policy: Policy) -> None:
    value = encode_policy(policy)
    decode_policy(value)  # refuse here what every worker would refuse
    # The versioned copy first: a policy in force is always in its history.
    _produce(settings, [(b"policy@%d" % policy.version, value), (POLICY_KEY, value)], "policy")


def publish_rules(settings: Settings, rules: RuleSet) -> None:
    value = encode_rules(rules)
    decode_rules(value)
    _produce(settings, [(b"rules@%d" % rules.version, value), (RULES_KEY, value)], "rules")


def _records(settings: Settings) -> list[Message]:
    return [
        m for m in read_all(settings, [settings.topic_control], timeout=15, idle=1.0) if m.value()
    ]


def _decoded(msg: Message, decode: Callable[[bytes | None], T]) -> T | None:
    """A control record decoded, or None (logged) when it is invalid: one bad record written
    past the CLI (kcat, a script) must not stop workers from starting."""
    try:
        return decode(msg.value())
    except InvalidMessage as exc:
        log.error(
            "ignoring an invalid %s record at offset %s of the control topic: %s",
            (msg.key() or b"?").decode("utf-8", "replace"),
            msg.offset(),
            exc.message,
        )
        return None


def latest_controls(settings: Settings) -> Controls:
    """The newest valid routing, policy and rules on the control topic (one read)."""
    found: Controls = Controls()
    for msg in _records(settings):
        key = msg.key()
        if key == ROUTING_KEY and (routing := _decoded(msg, decode_routing)) is not None:
            found = replace(found, routing=routing)
        elif key == POLICY_KEY and (policy := _decoded(msg, decode_policy)) is not None:
            found = replace(found, policy=policy)
        elif key == RULES_KEY and (rules := _decoded(msg, decode_rules)) is not None:
            found = replace(found, rules=rules)
    return found


def latest_routing(settings: Settings) -> Routing | None:
    """The newest routing on the control topic, or None if nobody has published one."""
    return latest_controls(settings).routing


def _history(settings: Settings, prefix: bytes, decode: Callable[[bytes | None], V]) -> list[V]:
    found: dict[int, V] = {}
    for msg in _records(settings):
        if (msg.key() or b"").startswith(prefix) and (item := _decoded(msg, decode)) is not None:
            found[item.version] = item
    return [found[v] for v in sorted(found)]


def policy_history(settings: Settings) -> list[Policy]:
    """Every policy version published, oldest first."""
    return _history(settings, b"policy@", decode_policy)


def rules_history(settings: Settings) -> list[RuleSet]:
    """Every rule set version published, oldest first."""
    return _history(settings, b"rules@", decode_rules)


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
