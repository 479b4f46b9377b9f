"""Follow the compacted control topic and apply every routing change live, in every worker.

Each worker reads the whole topic with its own unassigned consumer (no consumer group), so every
worker sees every change without a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from fraudstream.app.serving import ServingManager
from fraudstream.core.messages import decode_routing
from fraudstream.errors import InvalidMessage
from fraudstream.kafka.clients import make_consumer
from fraudstream.kafka.control import ROUTING_KEY
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
                if msg is None or msg.error() or msg.key() != ROUTING_KEY or not msg.value():
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
