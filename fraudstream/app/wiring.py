"""The worker put together: the Faust app, the scoring coordinator and the join, their timers,
the web pages and the API, all reporting failures to one supervisor.

The path of one transaction: Faust's consumer fetches it; the boundary hands the fetch to the
feed (``Hooks.divert_topic``); ``decide_batches`` takes batches off the feed to
``Coordinator.handle``; the coordinator checks offsets and hands the batch to
``ScoringHandler.step``, which runs ``engine.step`` once and returns what to send; the
coordinator writes it into the partition's Kafka transaction (``TransactionalWriters``) and
commits that with the changed card records and the next offset.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from fraudstream.app import api, faust_boundary, metrics, mover, web
from fraudstream.app.adapters import Clock, FaustTable, JoinInputs, KafkaSource
from fraudstream.app.app import FaustApp, create_app
from fraudstream.app.entities import EntityFollower
from fraudstream.app.entitywiring import (
    install_aggregator,
    install_join_watermarks,
    install_scoring_watermarks,
)
from fraudstream.app.feeds import IDLE_TAKE_S, as_record, decide_batches
from fraudstream.app.join import Join
from fraudstream.app.observers import MetricsObserver
from fraudstream.app.outputs import Output
from fraudstream.app.progress import ProgressLog
from fraudstream.app.reader import AssignedReader
from fraudstream.app.scoring import ScoringHandler
from fraudstream.app.serving import ServingManager
from fraudstream.app.supervisor import Supervisor
from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.coordinator.ports import Writers
from fraudstream.core.engine import Verdict
from fraudstream.core.records import Record
from fraudstream.errors import BrokerError
from fraudstream.kafka.admin import changelog_topic, entity_events_topic
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.wiring")


def card_changelog_topic(settings: Settings) -> str:
    return changelog_topic(settings, "card-state")


@dataclass
class Worker:
    faust: FaustApp
    settings: Settings
    serving: ServingManager
    supervisor: Supervisor
    coordinator: Coordinator[Verdict] | None
    join: Join | None
    mover: Coordinator[bool] | None = None
    aggregator: Coordinator[None] | None = None
    follower: EntityFollower | None = None
    ready: Callable[[], bool] = lambda: False  # what /readyz answers


def assemble(
    settings: Settings,
    serving: ServingManager,
    supervisor: Supervisor,
    *,
    writers: Writers | None = None,
    output: Output | None = None,
    aggregate_writers: Writers | None = None,
) -> Worker:
    """Build the worker. ``writers``, ``aggregate_writers`` and ``output`` replace the Kafka
    producers (tests)."""
    fa = create_app(settings)
    app, s = fa.app, settings
    follower = EntityFollower(s) if "score" in s.role_set else None
    coordinator = (
        _install_scoring(fa, s, serving, supervisor, writers, follower)
        if follower is not None
        else None
    )
    join, mover = _install_join(fa, s, supervisor, output) if "join" in s.role_set else (None, None)
    aggregator = (
        install_aggregator(
            fa,
            s,
            supervisor,
            source=KafkaSource(app, entity_events_topic(s), s),
            # Its records pass Faust's streams no more than the scoring path's: its progress
            # is what Faust's stall detector must watch.
            observer=MetricsObserver(app, entity_events_topic(s)),
            clock=Clock(),
            writers=aggregate_writers,
        )
        if "aggregate" in s.role_set
        else None
    )

    async def before_flush() -> None:
        # Faust flushes its producer before it commits offsets (timer, rebalance, shutdown):
        # the scoring transactions and the join's outputs go first.
        if coordinator is not None:
            await supervisor.guard(coordinator.commit_all())
        if aggregator is not None:
            await supervisor.guard(aggregator.commit_all())
        if join is not None:
            await supervisor.guard(join.out.flush())
        if mover is not None:
            await supervisor.guard(mover.commit_all())

    fa.hooks.before_flush = before_flush

    async def closing(_sender: Any, **_kw: Any) -> None:
        # Faust sends it after its fetcher stopped, before the producer's last flush (the
        # last before_flush): records still queued are left to the next owner.
        for c in (coordinator, aggregator, mover):
            if c is not None:
                c.close()

    app.on_before_shutdown.connect(cast("Any", closing))

    async def refresh_producer_metadata(_sender: Any, _assigned: Any, **_kw: Any) -> None:
        # After partitions were added, Faust's producer can still hold the old count and
        # refuse a table's changelog record for a new partition ("Unrecognized partition").
        # A rebalance follows every partition change: refresh there.
        try:
            await faust_boundary.refresh_producer_metadata(app)
        except Exception:  # best effort; the next rebalance tries again
            log.warning("could not refresh the producer's metadata", exc_info=True)

    _on_assignment(app, refresh_producer_metadata)
    app.timer(interval=0.25)(_async(supervisor.tick))
    app.timer(interval=1.0)(_lag_meter(app, s, coordinator))
    progress = ProgressLog(s.topic_transactions, time.monotonic)
    app.timer(interval=s.progress_interval_s)(_async(progress.tick))

    def ready_partitions() -> bool:
        assignment = app.consumer.assignment() if app.consumer else set()
        owned = {s.topic_transactions: coordinator, entity_events_topic(s): aggregator}
        return (follower is None or follower.ready.is_set()) and all(
            c.owns(tp.partition) for tp in assignment if (c := owned.get(tp.topic)) is not None
        )

    web.install(app, s, serving, ready_partitions)
    api.install(app, s, serving, coordinator)
    return Worker(
        fa, s, serving, supervisor, coordinator, join, mover, aggregator, follower, ready_partitions
    )


def _on_assignment(app: Any, receiver: Callable[..., Awaitable[None]]) -> None:
    """Run ``receiver(sender, assigned)`` after every rebalance (Faust's signal)."""
    app.on_partitions_assigned.connect(cast("Any", receiver))


def _async(fn: Any) -> Any:
    async def tick() -> None:
        fn()

    return tick


def _install_scoring(
    fa: FaustApp,
    s: Settings,
    serving: ServingManager,
    supervisor: Supervisor,
    writers: Writers | None,
    follower: EntityFollower,
) -> Coordinator[Verdict]:
    app = fa.app
    if writers is None:
        writers = _writers(app, s, supervisor.check)

    def partitions() -> int:
        n: int | None = app.consumer.topic_partitions(s.topic_transactions)
        return n or s.partitions

    handler = ScoringHandler(
        s, serving, partitions, follower=follower, events_topic=entity_events_topic(s)
    )
    coordinator: Coordinator[Verdict] = Coordinator(
        handler=handler,
        writers=writers,
        source=KafkaSource(app, s.topic_transactions, s),
        observer=MetricsObserver(app, s.topic_transactions),
        spawn=supervisor.spawn,
        fence=supervisor.check,
        clock=Clock(),
        commit_interval_s=s.commit_interval_ms / 1000.0,
    )
    fa.hooks.divert_topic = s.topic_transactions

    async def score_transactions(stream: Any) -> None:
        # Subscribes the topic. Its records reach the coordinator through the boundary's feed,
        # a fetch at a time, not through this stream (Faust's per-event delivery cost as much
        # CPU as deciding them: docs/benchmark.md). The boundary takes every record of the topic
        # out of each fetch, so this stream gets none: a long take window (IDLE_TAKE_S), not a
        # wake-up every 5 ms for nothing.
        async for events in stream.take_events(s.batch_size, IDLE_TAKE_S):
            await supervisor.guard(coordinator.handle([as_record(e.message) for e in events]))

    async def decide() -> None:
        # A Faust task: cancelled when the worker stops, after its last commit.
        await supervisor.guard(decide_batches(fa.hooks.feed, coordinator, s.batch_size))

    async def on_assigned(_sender: Any, assigned: Any, **_kw: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == s.topic_transactions}
        await supervisor.guard(coordinator.on_assigned(mine))

    async def decide_moved(records: list[Record]) -> None:
        await handler.until_open(records)
        await coordinator.handle_side(records)

    # Transactions moved to their card's partition, read from the position each owned
    # partition's state holds (ScoringHandler.moved_position), decided in its transaction.
    moved = AssignedReader(
        s,
        s.topic_transactions_repartition,
        f"{s.app_id}-moved-transactions",
        lambda: {
            p: (st, handler.moved_position(p)) for p, st in list(coordinator.partitions.items())
        },
        decide_moved,
    )

    async def read_moved() -> None:
        await supervisor.guard(moved.run())

    async def commit_due() -> None:
        await supervisor.guard(coordinator.commit_due())

    app.agent(fa.transactions, name="score-transactions")(score_transactions)
    app.task(decide)
    app.task(read_moved)
    app.timer(interval=max(0.1, coordinator.interval_s))(commit_due)
    _on_assignment(app, on_assigned)
    install_scoring_watermarks(fa, s, supervisor, coordinator, handler, follower)
    return coordinator


def _writers(app: Any, s: Settings, fence: Callable[[], None]) -> Writers:
    """The scoring path's writers for the configured processing guarantee."""
    if s.processing_guarantee == "at_least_once":
        from fraudstream.kafka.alo import AtLeastOnceWriters

        async def commit_offsets(positions: Mapping[int, int]) -> None:
            await faust_boundary.commit_offsets(app, s.topic_transactions, positions)

        return AtLeastOnceWriters(s, card_changelog_topic(s), commit_offsets)
    from fraudstream.kafka.txn import TransactionalWriters

    return TransactionalWriters(s, card_changelog_topic(s), fence=fence)


def _install_join(
    fa: FaustApp, s: Settings, supervisor: Supervisor, output: Output | None
) -> tuple[Join, Coordinator[bool]]:
    app = fa.app
    inputs = JoinInputs(app)
    join = Join(
        s,
        output or Output(s),
        records=FaustTable(fa.join_records, s.topic_decisions),
        counts=FaustTable(fa.join_counts, s.topic_decisions),
        held=FaustTable(fa.held_labels, s.topic_decisions),
        source=inputs,
    )
    mover_coordinator = mover.install(
        app,
        s,
        supervisor,
        # The join's count (Join._on_feedback): a label is either moved or joined where it is.
        partitions=lambda: inputs.partitions(s.topic_decisions) or s.partitions,
        held_by_group=lambda p: inputs.assigned((s.topic_feedback, p)),
        clock=Clock(),
    )
    fa.hooks.join_topics = frozenset(
        {s.topic_decisions, s.topic_feedback, s.topic_feedback_repartition}
    )
    fa.hooks.join_offset = lambda tp, committed: join.committable(
        (tp.topic, tp.partition), committed
    )

    async def join_feedback(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, 0.05):
            await supervisor.guard(join.handle([as_record(e.message) for e in events]))

    async def publish_metrics() -> None:
        try:
            await join.publish_metrics()
        except BrokerError:
            log.exception("publishing per-version metrics failed")

    async def sweep_held_labels() -> None:
        await supervisor.guard(join.sweep_held_labels())

    async def prune() -> None:
        await supervisor.guard(join.prune())

    async def restart_offsets(_sender: Any, _assigned: Any, **_kw: Any) -> None:
        # Faust seeks every assigned partition to its committed offset: first records again.
        join.restart()

    async def pace() -> None:
        await supervisor.guard(join.pace())  # also when no record comes: labels swept meanwhile

    app.agent(fa.join_inputs, name="join-feedback")(join_feedback)
    app.timer(interval=s.metrics_publish_seconds)(publish_metrics)
    app.timer(interval=max(1.0, s.feedback_grace_seconds / 10))(sweep_held_labels)
    app.timer(interval=1.0)(join.check_heads)
    app.timer(interval=1.0)(pace)
    app.timer(interval=s.join_prune_seconds)(prune)
    _on_assignment(app, restart_offsets)
    install_join_watermarks(fa, s, supervisor, join)
    return join, mover_coordinator


def _lag_meter(app: Any, s: Settings, coordinator: Coordinator[Verdict] | None) -> Any:
    shown: set[tuple[str, str]] = set()

    async def measure_lag() -> None:
        consumer = app.consumer
        assigned = consumer.assignment()
        owned = {(tp.topic, str(tp.partition)) for tp in assigned}
        for labels in shown - owned:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(*labels)
        shown.intersection_update(owned)
        for tp in assigned:
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001, S112 - not yet known after a rebalance
                continue
            if tp.topic == s.topic_transactions:
                # The scoring path keeps its own position: the next offset to decide.
                nxt = None if coordinator is None else coordinator.position(tp.partition)
                pos = None if nxt is None else nxt - 1
            else:
                pos = faust_boundary.read_position(consumer, tp)
            if high is not None and pos is not None:
                labels = (tp.topic, str(tp.partition))
                metrics.CONSUMER_LAG.labels(*labels).set(max(0, high - pos - 1))
                shown.add(labels)

    return measure_lag
