"""The one module that touches Faust's, aiokafka's and mode's internals (ruff's SLF rules hold
everywhere else). At import it checks that the installed versions are the ones tested
(``TESTED``) and that every internal used here exists (``PRIVATES``), and says what is wrong
instead of failing later in the middle of a rebalance.

What the worker changes in Faust, all through subclasses installed when the app is built:
- its consumer reads with ``read_committed`` (the join reads decisions written in transactions),
  holds an empty fetch for at most ``FETCH_MAX_WAIT_MS`` and waits for ``fetch_min_bytes``;
- its consumer hands the scoring topic's records to the scoring path a fetch at a time, before
  Faust's per-event delivery (``Hooks.divert``), and never commits that topic's offsets (they
  are committed inside the scoring transactions); the same for the entity aggregator's input
  (``Hooks.more_feeds``);
- its consumer asks the join for the join topics' offsets to commit (``Hooks.join_offset``):
  Faust's ack counting stalls on the holes commit markers leave in a transactional topic;
- its producer runs ``Hooks.before_flush`` whenever Faust flushes before committing offsets
  (timer, rebalance, shutdown): the scoring transactions and the join's outputs go first;
- its flow control does not clear stream buffers on resume (it resumes after seeking, so it
  would drop records fetched from the committed offsets);
- the at-least-once writers commit the scoring topic's offsets through the consumer thread
  (``commit_offsets``), under the group member's generation, past the filter above;
- its stall detector (the consumer's livelock check, at Faust's default window) watches the
  scoring path's real progress (``scoring_progress``): the diverted topic's records never pass
  Faust's streams nor its offset commits, which it would otherwise take for a stalled stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiokafka
import faust
from faust.streams import _current_event
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from fraudstream.core.records import Record
from fraudstream.errors import FaustIncompatible, Fenced

#: distribution -> (first version tested, first version not tested)
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "faust-streaming": ((0, 15, 3), (0, 16)),
    "aiokafka": ((0, 14), (0, 15)),
    "mode-streaming": ((0, 7, 1), (0, 8)),
}

#: (owner, internal name): class attributes and methods, or attributes set in ``__init__``.
PRIVATES: list[tuple[Any, str]] = [
    (faust.streams, "_current_event"),
    (faust.App, "_consumer"),
    (faust.App, "_producer"),
    (faust_consumer.ThreadDelegateConsumer, "_thread"),
    (driver.AIOKafkaConsumerThread, "commit"),
    (faust_consumer.Consumer, "_wait_next_records"),
    (faust_consumer.Consumer, "_new_offset"),
    (faust_consumer.Consumer, "_committed_offset"),
    (faust_consumer.Consumer, "_acked"),
    (faust_consumer.Consumer, "_acked_index"),
    (faust_consumer.Consumer, "_read_offset"),
    (driver.Consumer, "_new_consumer_thread"),
    (driver.Consumer, "_commit"),
    (driver.Producer, "_producer"),
    (driver.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (driver.AIOKafkaConsumerThread, "tp_last_committed_at"),
    (driver.AIOKafkaConsumerThread, "verify_event_path"),
    (faust.Monitor, "stream_inbound_time"),
    (aiokafka.AIOKafkaConsumer, "_isolation_level"),
    (aiokafka.AIOKafkaConsumer, "_fetch_max_wait_ms"),
    (aiokafka.AIOKafkaConsumer, "_fetch_min_bytes"),
    (FlowControlEvent, "_suspend"),
    (FlowControlEvent, "_resume"),
]

# The longest the broker may hold an empty fetch of the worker's consumer. Faust asks for 1.5 s,
# and aiokafka keeps one fetch in flight per broker, leaving out partitions whose records are
# still buffered: with every scoring partition buffered, the next fetch held only idle changelog
# partitions, and new transactions waited behind it for the full 1.5 s (docs/benchmark.md).
FETCH_MAX_WAIT_MS = 20


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+", maxsplit=1)[0])[:3])


def check_versions(version: Callable[[str], str] = importlib.metadata.version) -> None:
    wrong = []
    for dist, (low, high) in TESTED.items():
        got = version(dist)
        if not low <= _release(got) < high:
            span = f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
            wrong.append(f"{dist} {got} (tested: {span})")
    if wrong:
        raise FaustIncompatible(
            "the worker relies on internals of Faust, aiokafka and mode checked only for the "
            f"versions tested; installed: {'; '.join(wrong)}. Install the project's pinned "
            "versions (pip install -e .), or test the new ones and widen "
            "fraudstream.app.faust_boundary.TESTED"
        )


def _has(owner: Any, name: str) -> bool:
    if hasattr(owner, name):
        return True
    if not inspect.isclass(owner):
        return False
    for klass in owner.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return True
        init = klass.__dict__.get("__init__")
        if init is not None:
            with contextlib.suppress(OSError, TypeError):
                if re.search(rf"self\.{name}\s*[:=]", inspect.getsource(init)):
                    return True
    return False


def _name(owner: Any) -> str:
    if inspect.ismodule(owner):
        return str(owner.__name__)
    return f"{owner.__module__}.{owner.__qualname__}"


def check_privates(privates: list[tuple[Any, str]] = PRIVATES) -> None:
    missing = [f"{_name(o)}.{n}" for o, n in privates if not _has(o, n)]
    if missing:
        raise FaustIncompatible(
            f"the installed Faust/aiokafka/mode lack internals the worker uses: "
            f"{', '.join(missing)}. Install the versions in pyproject.toml"
        )


check_versions()
check_privates()


# --- what the wiring plugs in ---------------------------------------------------------------


async def _nothing() -> None:
    return None


@dataclass
class Hooks:
    """The wiring's side of the changes above; fields left at their defaults change nothing."""

    fetch_min_bytes: int = 1
    divert_topic: str | None = None  # this topic's records go to ``feed`` a fetch at a time
    feed: asyncio.Queue[list[Record]] = field(default_factory=lambda: asyncio.Queue(maxsize=2))
    # More topics handled the same way, each with its own feed (the entity aggregator's input)
    more_feeds: dict[str, asyncio.Queue[list[Record]]] = field(default_factory=dict)
    before_flush: Callable[[], Awaitable[None]] = _nothing
    join_topics: frozenset[str] = frozenset()
    # (tp, Faust's committed offset) -> the offset to commit now, or None
    join_offset: Callable[[Any, int | None], int | None] = lambda _tp, _committed: None


def diverted(records: Any, active: set[Any] | None, topic: str) -> list[Record]:
    """Take ``topic``'s records out of a fetch (aiokafka ConsumerRecords) as ``Record``s; the
    other topics' records stay for Faust. Records of partitions no longer active are dropped:
    they are fetched again after the seek to the committed offsets."""
    out: list[Record] = []
    for tp in [tp for tp in records if tp.topic == topic]:
        fetched = records.pop(tp)
        if active is not None and tp not in active:
            continue
        for r in fetched:
            ts = None if r.timestamp is None else r.timestamp / 1000.0
            out.append(Record(tp.topic, tp.partition, r.offset, r.key, r.value, ts))
    return out


def install(app: faust.App, hooks: Hooks) -> None:
    """Put the subclasses in place on a new app, before its consumer and producer exist."""
    if app._consumer is not None or app._producer is not None:
        raise RuntimeError("install the Faust boundary before the consumer or producer is used")

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Faust reads read_committed only in its own exactly-once mode, which ties a
            # transaction to the output partition; these are read by AIOKafkaConsumer.start().
            consumer._isolation_level = "read_committed"
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
            consumer._fetch_min_bytes = hooks.fetch_min_bytes
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
            records, active = await super()._wait_next_records(timeout)
            if records and hooks.divert_topic is not None:
                batch = diverted(records, active, hooks.divert_topic)
                # Records fetched while the flow is stopped (a rebalance) are dropped, as Faust
                # drops its own, and fetched again after the seek. A full feed holds the fetch
                # loop: back-pressure.
                if batch and self.flow_active:
                    await hooks.feed.put(batch)
            for topic, feed in hooks.more_feeds.items():
                if records:
                    batch = diverted(records, active, topic)
                    if batch and self.flow_active:
                        await feed.put(batch)
            return records, active

        async def _commit(self, offsets: Any) -> bool:
            rest = {
                tp: o
                for tp, o in offsets.items()
                if tp.topic != hooks.divert_topic and tp.topic not in hooks.more_feeds
            }
            return bool(await super()._commit(rest)) if rest else True

        def _new_offset(self, tp: Any) -> int | None:
            if tp.topic not in hooks.join_topics:
                got: int | None = super()._new_offset(tp)
                return got
            offset = hooks.join_offset(tp, self._committed_offset.get(tp))
            if offset is not None:
                self._acked[tp].clear()
                self._acked_index[tp].clear()
            return offset

    class Producer(driver.Producer):
        async def flush(self) -> None:
            await hooks.before_flush()
            await super().flush()

    class KeepBuffersOnResume(FlowControlEvent):
        def resume(self) -> None:
            # The revocation already cleared the buffers (faust.app.base
            # _on_partitions_revoked); records buffered since were fetched after the seek.
            self._suspend.clear()
            self._resume.set()

    # Faust names a service's logger after its class's module: keep Faust's names in the logs.
    ConsumerThread.logger = driver.AIOKafkaConsumerThread.logger
    Consumer.logger = driver.Consumer.logger
    Producer.logger = driver.Producer.logger
    transport: Any = app.transport
    transport.Consumer = Consumer
    transport.Producer = Producer
    app.flow_control = KeepBuffersOnResume(loop=app.loop)


# --- small reads and writes of Faust's state ---------------------------------------------------


@contextlib.contextmanager
def table_partition(topic: str, partition: int) -> Iterator[None]:
    """Write (and read) Faust tables as if handling a record of ``topic[partition]``.

    Faust picks a table key's changelog partition and RocksDB shard from the *current* event;
    the join writes outside of Faust's per-event iteration, so it names the partition."""
    event = _TableEvent(topic, partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


class _TableEvent:
    """The parts of a Faust event its tables read: ``message.topic`` / ``.partition``."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = self
        self.topic, self.partition, self.offset = topic, partition, -1
        self.timestamp: float | None = None


def scoring_progress(
    app: faust.App, topic: str, partitions: Any, *, committed: bool, now: float | None = None
) -> None:
    """Tell Faust's stall detector that the scoring path moved in ``topic``'s ``partitions``:
    records went into their transactions (``committed=False``, what Faust calls a stream's
    inbound event) or a transaction committed their offsets (``committed=True``). Its check
    (``AIOKafkaConsumerThread.verify_event_path``) then reports a partition whose fetched
    records are not decided, or not committed, within its window, as it does for its own
    streams, and says nothing about a scoring path that works."""
    consumer: Any = app._consumer
    if consumer is None:
        return
    at = time.monotonic() if now is None else now
    tps = [TP(topic, p) for p in partitions]
    if committed:
        consumer._thread.tp_last_committed_at.update(dict.fromkeys(tps, at))
    else:
        app.monitor.stream_inbound_time.update(dict.fromkeys(tps, at))


async def commit_offsets(app: faust.App, topic: str, positions: Mapping[int, int]) -> None:
    """Commit ``topic``'s offsets (partition -> next offset) as the consumer group's member,
    under its generation: raises ``Fenced`` when the group gave a partition away meanwhile.
    Faust's own commits leave the scoring topic out (``Consumer._commit`` above)."""
    consumer: Any = app.consumer
    offsets = {TP(topic, p): o for p, o in positions.items()}
    assigned = consumer.assignment()
    gone = sorted(tp.partition for tp in offsets if tp not in assigned)
    if gone or not await consumer._thread.commit(offsets):
        raise Fenced(
            f"the consumer group gave partitions {gone or sorted(positions)} of {topic!r} to "
            "another worker before their offsets were committed: their records are decided "
            "again there"
        )


def read_position(consumer: Any, tp: Any) -> int | None:
    """The offset of the last record Faust's consumer read from ``tp`` (None: none yet)."""
    got: int | None = consumer._read_offset.get(tp)
    return got


async def refresh_producer_metadata(app: faust.App) -> None:
    """Make Faust's producer read the topics' partition counts again."""
    producer: Any = app.producer
    client = getattr(producer._producer, "client", None)  # None until the producer started
    if client is not None:
        await client.force_metadata_update()


def discard_unstarted(app: faust.App) -> None:
    """Close the event loop of a consumer thread that was built but never started (tests build
    apps without running them; unclosed, its finalizer warns at a random later moment)."""
    consumer: Any = app._consumer
    if consumer is not None:
        consumer._thread.thread_loop.close()
