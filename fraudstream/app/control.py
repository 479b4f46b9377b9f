"""Follow the compacted control topic and apply every routing, policy and rules change live, in
every worker.

Each worker reads the whole topic with its own unassigned consumer (no consumer group), so every
worker sees every change without a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from fraudstream.app.serving import ServingManager
from fraudstream.core.messages import decode_routing
from fraudstream.core.policy import Policy, decode_policy
from fraudstream.core.rules import RuleSet, decode_rules
from fraudstream.errors import InvalidMessage
from fraudstream.kafka.clients import make_consumer
from fraudstream.kafka.control import POLICY_KEY, ROUTING_KEY, RULES_KEY
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.control")


class ControlFollower:
    def __init__(self, settings: Settings, serving: ServingManager) -> None:
        self.settings = settings
        self.serving = serving
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="fraudstream-control", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        consumer = make_consumer(self.settings, group_id=f"{self.settings.app_id}-control")
        consumer.assign([TopicPartition(self.settings.topic_control, 0, OFFSET_BEGINNING)])
        last_seen = None
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() or not msg.value():
                    continue
                key = msg.key()
                if key in (POLICY_KEY, RULES_KEY):
                    self._versioned(loop, msg)
                    continue
                if key != ROUTING_KEY:
                    continue
                try:
                    routing = decode_routing(msg.value())
                except InvalidMessage as exc:
                    log.error(
                        "ignoring an invalid routing record at offset %s: %s",
                        msg.offset(),
                        exc.message,
                    )
                    continue
                if routing == last_seen:
                    continue
                last_seen = routing
                current = self.serving.requested
                if current is not None and routing == current:
                    continue
                fut = asyncio.run_coroutine_threadsafe(self.serving.apply(routing), loop)
                try:
                    fut.result(timeout=120)
                    self.applied += 1
                except Exception:
                    log.exception("applying routing from offset %s failed", msg.offset())
        finally:
            consumer.close()

    def _versioned(self, loop: asyncio.AbstractEventLoop, msg: Message) -> None:
        """Apply a policy or rule set newer than the one in force. Older ones are the topic's
        past, read again from its start (compaction has not removed them yet): skipped."""
        serving = self.serving.current
        assert serving is not None
        try:
            if msg.key() == POLICY_KEY:
                policy = decode_policy(msg.value())
                if _newer(policy, serving.policy):
                    loop.call_soon_threadsafe(self.serving.apply_policy, policy)
                    self.applied += 1
            else:
                rules = decode_rules(msg.value())
                if _newer(rules, serving.rules):
                    loop.call_soon_threadsafe(self.serving.apply_rules, rules)
                    self.applied += 1
        except InvalidMessage as exc:
            log.error(
                "ignoring an invalid %s record at offset %s: %s; the one in force stays",
                (msg.key() or b"").decode(),
                msg.offset(),
                exc.message,
            )


def _newer(new: Policy | RuleSet, current: Policy | RuleSet) -> bool:
    return new.version > current.version or (new.version == current.version and new != current)
