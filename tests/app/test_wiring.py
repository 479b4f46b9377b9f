"""The worker assembled (``fraudstream.app.wiring``) without a broker: what each role installs,
the path from the boundary's feed to the coordinator, and what runs before Faust commits."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from fraudstream.app import faust_boundary
from fraudstream.app.partitioning import home
from fraudstream.app.serving import ServingManager
from fraudstream.app.supervisor import Supervisor
from fraudstream.app.wiring import Worker, assemble, decide_batches
from fraudstream.core.records import Record
from fraudstream.kafka.admin import entity_events_topic
from fraudstream.settings import Settings
from tests.app.conftest import tx_bytes
from tests.app.test_join import RecordingOutput
from tests.fakes import FakeWriters, record


def build(settings: Settings, serving: ServingManager, **kw: Any) -> tuple[Worker, FakeWriters]:
    writers = FakeWriters()
    sup = Supervisor(pause_limit_s=60.0, exit_process=lambda code: None)
    worker = assemble(
        settings,
        serving,
        sup,
        writers=writers,
        output=RecordingOutput(),
        aggregate_writers=FakeWriters(),
        **kw,
    )
    if worker.follower is not None:
        # No entity-state topic here: the follower is taken as caught up (the gate stays open).
        worker.follower.watermark = math.inf
    return worker, writers


def test_each_role_installs_its_agent_and_hooks(
    settings: Settings, serving: ServingManager
) -> None:
    async def body() -> None:
        both, _ = build(settings, serving)
        assert set(both.faust.app.agents) == {
            "score-transactions",
            "join-feedback",
            "aggregate-entity-events",
        }
        hooks = both.faust.hooks
        assert hooks.divert_topic == settings.topic_transactions
        assert set(hooks.more_feeds) == {entity_events_topic(settings)}
        assert both.aggregator is not None
        assert both.follower is not None
        assert hooks.join_topics == {
            settings.topic_decisions,
            settings.topic_feedback,
            settings.topic_feedback_repartition,
        }
        assert both.coordinator is not None
        assert both.join is not None
        assert both.mover is not None  # the feedback mover goes with the join

        join_only, _ = build(settings.model_copy(update={"roles": "join"}), serving)
        assert set(join_only.faust.app.agents) == {"join-feedback"}
        assert join_only.faust.hooks.divert_topic is None
        assert join_only.coordinator is None
        assert join_only.mover is not None
        assert join_only.aggregator is None
        assert join_only.follower is None
        assert join_only.faust.hooks.more_feeds == {}
        assert join_only.join is not None
        assert join_only.join.events_topic == entity_events_topic(settings)

        score_only, _ = build(settings.model_copy(update={"roles": "score"}), serving)
        assert score_only.join is None
        assert score_only.mover is None

        aggregate_only, _ = build(settings.model_copy(update={"roles": "aggregate"}), serving)
        assert set(aggregate_only.faust.app.agents) == {"aggregate-entity-events"}
        assert aggregate_only.coordinator is None
        assert aggregate_only.join is None
        assert aggregate_only.aggregator is not None

    asyncio.run(body())


def test_fetches_reach_the_coordinator_in_batches_in_offset_order(
    settings: Settings, serving: ServingManager
) -> None:
    async def body() -> None:
        worker, writers = build(settings, serving)
        coordinator = worker.coordinator
        assert coordinator is not None
        steps: list[list[tuple[int, int]]] = []
        handler: Any = coordinator.handler
        step = handler.step

        def recording_step(records: list[Record]) -> Any:
            steps.append([(r.partition, r.offset) for r in records])
            return step(records)

        handler.step = recording_step
        await coordinator.on_assigned({0, 1})
        feed = worker.faust.hooks.feed
        for p in (0, 1):
            card = f"c-{p}"
            await feed.put(
                [record(p, o, tx_bytes(f"tx-{p}-{o}", card), card.encode()) for o in range(5)]
            )
        task = asyncio.ensure_future(decide_batches(feed, coordinator, 3))
        try:
            deadline = time.monotonic() + 10
            while sum(len(s) for s in steps) < 10:
                assert time.monotonic() < deadline, "the fed records were not decided"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        assert all(len(s) <= 3 for s in steps)
        for p in (0, 1):
            assert [o for s in steps for q, o in s if q == p] == list(range(5))
        await coordinator.commit_all()
        assert writers.offsets == {0: 5, 1: 5}
        faust_boundary.discard_unstarted(worker.faust.app)

    asyncio.run(body())


def test_before_faust_commits_the_scoring_transactions_and_the_join_s_outputs_go_first(
    settings: Settings, serving: ServingManager
) -> None:
    async def body() -> None:
        worker, writers = build(settings, serving)
        coordinator = worker.coordinator
        assert coordinator is not None
        p = home(b"card-f", settings.partitions)  # on its card's partition: decided there
        await coordinator.on_assigned({p})
        await coordinator.handle([record(p, 0, tx_bytes("tx-f", "card-f"), b"card-f")])
        assert writers.visible == []
        await worker.faust.hooks.before_flush()
        assert [s.key for s in writers.visible if s.topic == settings.topic_decisions] == [b"tx-f"]
        assert worker.join is not None
        out: Any = worker.join.out
        assert out.flushes == 1
        faust_boundary.discard_unstarted(worker.faust.app)

    asyncio.run(body())
