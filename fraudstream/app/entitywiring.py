"""The entity-state topology put together (docs/entity-state.md): the aggregator role under its
own coordinator, the follower every scoring worker reads, and the watermark timers.

- ``aggregate``: ``<app>-entity-events`` is diverted from Faust's consumer a fetch at a time (as
  ``transactions`` is) to a second ``Coordinator`` whose ``TransactionalWriters`` use the
  compacted ``<app>-entity-state`` as the changelog and ``aggregate-<p>`` transactional ids.
- ``score``: the follower thread, and a timer that writes each owned partition's watermark into
  its open transaction (``Coordinator.emit``).
- ``join``: a timer that sends each owned feedback partition's watermark.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from faust.types import TP

from fraudstream.app.aggregate import AggregateHandler
from fraudstream.app.app import FaustApp
from fraudstream.app.entities import EntityFollower
from fraudstream.app.feeds import IDLE_TAKE_S, as_record, decide_batches
from fraudstream.app.join import Join
from fraudstream.app.scoring import ScoringHandler
from fraudstream.app.supervisor import Supervisor
from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.coordinator.ports import Source, Writers
from fraudstream.core.records import Record
from fraudstream.kafka.admin import entity_events_topic, entity_state_topic
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.entitywiring")

#: A partition caught up for this long reports the clock as its watermark.
IDLE_S = 2.0
WATERMARK_INTERVAL_S = 0.1


def install_aggregator(
    fa: FaustApp,
    s: Settings,
    supervisor: Supervisor,
    *,
    source: Source,
    observer: Any,
    clock: Any,
    writers: Writers | None = None,
) -> Coordinator[None]:
    app = fa.app
    topic = entity_events_topic(s)
    if writers is None:
        from fraudstream.kafka.txn import TransactionalWriters

        writers = TransactionalWriters(
            s, entity_state_topic(s), input_topic=topic, role="aggregate", fence=supervisor.check
        )
    coordinator: Coordinator[None] = Coordinator(
        handler=AggregateHandler(),
        writers=writers,
        source=source,
        observer=observer,
        spawn=supervisor.spawn,
        fence=supervisor.check,
        clock=clock,
        commit_interval_s=s.commit_interval_ms / 1000.0,
    )
    feed: asyncio.Queue[list[Record]] = asyncio.Queue(maxsize=2)
    fa.hooks.more_feeds[topic] = feed

    async def aggregate_events(stream: Any) -> None:
        # Subscribes the topic; its records come through the boundary's feed (as transactions),
        # so the stream stays empty: the long take window of the scoring agent's.
        async for events in stream.take_events(s.batch_size, IDLE_TAKE_S):
            await supervisor.guard(coordinator.handle([as_record(e.message) for e in events]))

    async def aggregate() -> None:
        await supervisor.guard(decide_batches(feed, coordinator, max(s.batch_size, 2000)))

    async def on_assigned(_sender: Any, assigned: Any, **_kw: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == topic}
        await supervisor.guard(coordinator.on_assigned(mine))

    async def commit_due() -> None:
        await supervisor.guard(coordinator.commit_due())

    app.agent(fa.entity_events, name="aggregate-entity-events")(aggregate_events)
    app.task(aggregate)
    app.timer(interval=max(0.1, coordinator.interval_s))(commit_due)
    app.on_partitions_assigned.connect(cast("Any", on_assigned))
    return coordinator


class Idle:
    """Which partitions have been caught up (position at the high watermark) for ``IDLE_S``."""

    def __init__(self) -> None:
        self.since: dict[int, float] = {}

    def update(self, caught_up: dict[int, bool]) -> set[int]:
        now = time.monotonic()
        for p, yes in caught_up.items():
            if not yes:
                self.since.pop(p, None)
            else:
                self.since.setdefault(p, now)
        for p in set(self.since) - set(caught_up):
            del self.since[p]
        return {p for p, t in self.since.items() if now - t >= IDLE_S}


def install_scoring_watermarks(
    fa: FaustApp,
    s: Settings,
    supervisor: Supervisor,
    coordinator: Coordinator[Any],
    handler: ScoringHandler,
    follower: EntityFollower,
) -> None:
    app = fa.app
    idle = Idle()

    async def scoring_watermarks() -> None:
        follower.check()
        if follower.partitions == 0:
            return  # the entity topics' partition count is not known yet

        consumer = app.consumer
        caught: dict[int, bool] = {}
        for p in list(coordinator.partitions):
            pos = coordinator.position(p)
            try:
                high = consumer.highwater(TP(s.topic_transactions, p))
            except Exception:  # noqa: BLE001 - not known yet after a rebalance
                high = None
            st = coordinator.partitions.get(p)
            caught[p] = (
                pos is not None
                and high is not None
                and pos >= high
                and st is not None
                and not st.waiting
            )
        quiet = idle.update(caught)
        n = follower.partitions
        await coordinator.emit(lambda p: handler.watermarks(p, idle=p in quiet, partitions=n))

    async def tick() -> None:
        await supervisor.guard(scoring_watermarks())

    app.timer(interval=WATERMARK_INTERVAL_S)(tick)

    @app.task
    async def follow_entities() -> None:
        loop = asyncio.get_running_loop()

        def wake() -> None:
            supervisor.spawn(coordinator.wake(), name="entity-wake")

        def advanced() -> None:  # on the follower's thread
            if handler.gate is not None and handler.gate.parked:
                loop.call_soon_threadsafe(wake)

        follower.on_advance = advanced
        follower.start()


def install_join_watermarks(fa: FaustApp, s: Settings, supervisor: Supervisor, join: Join) -> None:
    from fraudstream.app import faust_boundary

    app = fa.app
    join.events_topic = entity_events_topic(s)
    idle = Idle()

    async def join_watermarks() -> None:
        consumer = app.consumer
        caught: dict[int, bool] = {}
        for tp in consumer.assignment():
            if tp.topic != s.topic_feedback:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not known yet after a rebalance
                high = None
            pos = faust_boundary.read_position(consumer, tp)
            caught[tp.partition] = high is not None and (high == 0 or (pos or -1) >= high - 1)
        quiet = idle.update(caught)
        n = consumer.topic_partitions(entity_events_topic(s)) or s.partitions
        if join.watermarks(quiet, n):
            await join.out.flush()

    async def tick() -> None:
        await supervisor.guard(join_watermarks())

    app.timer(interval=WATERMARK_INTERVAL_S)(tick)
