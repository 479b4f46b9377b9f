"""``app.adapters``: our ports over Faust's consumer and tables, on stand-ins of their public
surface (``assignment``, ``seek``, ``topic_partitions``; a table is a mapping). Which partition
a table write names is tested with Faust itself in test_faust_boundary.py."""

from __future__ import annotations

import asyncio

from faust.types import TP

from fraudstream.app.adapters import Clock, FaustTable, JoinInputs, KafkaSource
from fraudstream.settings import Settings


class Consumer:
    def __init__(self, assigned: set[TP]) -> None:
        self._assigned = assigned
        self.seeks: list[tuple[TP, int]] = []
        self.paused: set[TP] = set()

    def assignment(self) -> set[TP]:
        return self._assigned

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def topic_partitions(self, topic: str) -> int | None:
        return 3 if topic == "fraud.feedback" else None

    def pause_partitions(self, tps: set[TP]) -> None:
        self.paused = set(tps)

    def resume_partitions(self, tps: set[TP]) -> None:
        self.paused -= set(tps)


class App:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.in_recovery = False


def test_kafka_source_speaks_for_its_topic_only() -> None:
    consumer = Consumer({TP("transactions", 1)})
    src = KafkaSource(App(consumer), "transactions", Settings(_env_file=None))  # type: ignore[call-arg]
    assert src.assigned(1)
    assert not src.assigned(0)
    asyncio.run(src.seek(1, 42))
    assert consumer.seeks == [(TP("transactions", 1), 42)]
    assert Clock.monotonic() > 0


def test_join_inputs_and_tables() -> None:
    consumer = Consumer({TP("fraud.feedback", 2)})
    inputs = JoinInputs(App(consumer))
    assert inputs.partitions("fraud.feedback") == 3
    assert inputs.partitions("unknown") is None
    assert inputs.assigned(("fraud.feedback", 2))
    asyncio.run(inputs.seek(("fraud.feedback", 2), 7))
    assert consumer.seeks == [(TP("fraud.feedback", 2), 7)]

    table: dict[bytes, bytes] = {}
    ft = FaustTable(table, "fraud.decisions")
    ft.put(2, b"k", b"v")
    assert table == {b"k": b"v"}
    assert ft.get(2, b"k") == b"v"
    assert list(ft.items()) == [(b"k", b"v")]
    ft.delete(2, b"k")
    ft.delete(2, b"k")  # deleting what is gone is fine
    assert ft.get(2, b"k") is None


def test_join_inputs_pause_the_assigned_partitions_named() -> None:
    consumer = Consumer({TP("fraud.feedback", 2), TP("fraud.decisions", 2)})
    app = App(consumer)
    inputs = JoinInputs(app)
    inputs.pause([("fraud.feedback", 2), ("repartition", 2), ("fraud.feedback", 1)])
    assert consumer.paused == {TP("fraud.feedback", 2)}
    app.in_recovery = True  # Faust resumes what it assigns once recovered
    inputs.resume([("fraud.feedback", 2)])
    assert consumer.paused == {TP("fraud.feedback", 2)}
    app.in_recovery = False
    inputs.resume([("fraud.feedback", 2)])
    assert consumer.paused == set()
