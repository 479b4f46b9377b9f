"""The feedback mover: its handler under the real coordinator on in-memory ports (tests/fakes.py):
which labels move, where to, with what, exactly once through an aborted commit."""

from __future__ import annotations

import asyncio

from aiokafka.partitioner import murmur2
from prometheus_client import REGISTRY

from fraudstream.app.mover import MoveHandler, misplaced, transaction_key
from fraudstream.app.partitioning import home
from fraudstream.core.messages import Feedback, encode_feedback
from fraudstream.core.records import Record
from tests.fakes import make_coordinator, record

PARTITIONS = 4
TARGET = "app-feedback-repartition"


def label(tid: str) -> bytes:
    return encode_feedback(Feedback(tid, True, "chargeback", "2024-05-03T09:00:00+00:00"))


def moved_total() -> float:
    return REGISTRY.get_sample_value("fraudstream_feedback_moved_total") or 0.0


def ids_off(partition: int, count: int) -> list[str]:
    """Transaction ids whose murmur2 partition is not ``partition``."""
    out, i = [], 0
    while len(out) < count:
        tid = f"tx-{i}"
        if (murmur2(tid.encode()) & 0x7FFFFFFF) % PARTITIONS != partition:
            out.append(tid)
        i += 1
    return out


def test_where_a_label_belongs_is_murmur2_of_its_transaction_id() -> None:
    assert home(b"tx-1", PARTITIONS) == (murmur2(b"tx-1") & 0x7FFFFFFF) % PARTITIONS
    assert transaction_key(label("tx-1")) == b"tx-1"
    for bad in (b"{", b"", b"[]", b'{"transaction_id": 5}', None):
        assert transaction_key(bad) is None  # left where it is: the join dead-letters it
    right = home(b"tx-1", PARTITIONS)
    assert misplaced(Record("fb", right, 0, None, label("tx-1")), PARTITIONS) is None
    # By the id in the value, not the record's key: a keyless label moves too.
    assert misplaced(Record("fb", (right + 1) % 4, 0, None, label("tx-1")), PARTITIONS) == b"tx-1"


def test_labels_off_their_partition_move_once_the_others_stay() -> None:
    async def body() -> None:
        handler = MoveHandler(TARGET, lambda: PARTITIONS)
        c, writers, _, _, _, tasks = make_coordinator(handler)
        off = ids_off(1, 3)
        on = next(f"ok-{i}" for i in range(99) if home(f"ok-{i}".encode(), PARTITIONS) == 1)
        batch = [record(1, 0, label(off[0]), b"x"), record(1, 1, label(on), on.encode())]
        batch += [record(1, 2 + i, label(t), t.encode()) for i, t in enumerate(off[1:])]
        before = moved_total()
        writers.fail_commits = 1  # Kafka aborts the first commit: moved again, not twice
        await c.handle(batch)
        await c.commit_all()
        sent = writers.seen(TARGET)
        assert [s.key for s in sent] == [t.encode() for t in off]
        assert [s.value for s in sent] == [label(t) for t in off]
        assert sent[0].headers == {
            "origin.topic": "transactions",
            "origin.partition": "1",
            "origin.offset": "0",
        }
        assert writers.offsets == {1: 4}  # the moves and the input offset, one transaction
        assert moved_total() - before == 3  # counted once, when committed
        tasks.check()

    asyncio.run(asyncio.wait_for(body(), timeout=30))
