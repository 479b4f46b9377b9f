"""The feedback join on dict tables and a recording producer: outcomes, reversals, held labels,
labels before their decision, labels in the wrong partition, its own commit positions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2
from prometheus_client import REGISTRY

from fraudstream.app import join as join_module
from fraudstream.app.join import Join, TopicPartition
from fraudstream.app.outputs import Barrier, Output
from fraudstream.app.partitioning import home
from fraudstream.core.messages import (
    Decision,
    Feedback,
    Shadow,
    decode_outcome,
    encode_decision,
    encode_feedback,
)
from fraudstream.core.outcomes import Confusion, classify
from fraudstream.core.records import Record
from fraudstream.settings import Settings
from tests.app.conftest import CHALLENGER, CHAMPION


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    partition: int | None = None


class RecordingOutput(Output):
    """``Output`` without Kafka: what would be produced is recorded, in order."""

    def __init__(self) -> None:  # no producer, no poller
        self.records: list[Sent] = []
        self.flushes = 0

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        hdrs = {k: v.decode() for k, v in headers or ()}
        assert len(hdrs) == len(headers or ()), "a header name repeats"
        self.records.append(Sent(topic, key, value, hdrs, partition))

    def checkpoint(self) -> Barrier:
        return Barrier().close(asyncio.get_running_loop())  # nothing is in flight

    async def flush(self) -> None:
        self.flushes += 1

    def on(self, topic: str) -> list[Sent]:
        return [r for r in self.records if r.topic == topic]


class DictTable:
    def __init__(self) -> None:
        self.data: dict[bytes, tuple[int, bytes]] = {}
        self.deleted: dict[bytes, int] = {}  # key -> the partition it was deleted in

    def get(self, partition: int, key: bytes) -> bytes | None:
        got = self.data.get(key)
        return None if got is None else got[1]

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[key] = (partition, value)

    def delete(self, partition: int, key: bytes) -> None:
        self.data.pop(key, None)
        self.deleted[key] = partition

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, (_, v) in self.data.items()]


class Inputs:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.given_away: set[int] = set()  # partitions the group took away
        self.paused: list[list[TopicPartition]] = []
        self.resumed: list[list[TopicPartition]] = []

    def partitions(self, topic: str) -> int | None:
        return 2

    def assigned(self, tp: TopicPartition) -> bool:
        return tp[1] not in self.given_away

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        self.paused.append(list(tps))

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        self.resumed.append(list(tps))


class Rig:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.out = RecordingOutput()
        self.records, self.counts, self.held = DictTable(), DictTable(), DictTable()
        self.inputs = Inputs()
        self.join = Join(
            settings,
            self.out,
            records=self.records,
            counts=self.counts,
            held=self.held,
            source=self.inputs,
        )
        self.offset = 0

    async def deliver(
        self, topic: str, value: bytes, key: bytes, partition: int | None = None
    ) -> Record:
        if partition is None:
            partition = (murmur2(key) & 0x7FFFFFFF) % 2
        rec = Record(topic, partition, self.offset, key, value, time.time())
        self.offset += 1
        await self.join.handle([rec])
        return rec

    async def label(self, tid: str, is_fraud: bool, partition: int | None = None) -> Record:
        fb = Feedback(tid, is_fraud, "chargeback", "2024-05-03T09:00:00+00:00")
        return await self.deliver(
            self.s.topic_feedback, encode_feedback(fb), tid.encode(), partition
        )

    def outcomes(self, topic: str | None = None) -> list[Any]:
        return [decode_outcome(r.value) for r in self.out.on(topic or self.s.topic_outcomes)]

    def confusion(self, partition: int, version: str, variant: str) -> Confusion:
        raw = self.counts.get(partition, f"{partition}|{version}|{variant}".encode())
        return Confusion.from_dict(orjson.loads(raw)) if raw else Confusion()


def run(settings: Settings, body: Callable[[Rig], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(Rig(settings)), timeout=30))


def decision(tid: str, kind: str, *, shadow: Shadow | None = None, amount: float = 310.0) -> bytes:
    return encode_decision(
        Decision(
            transaction_id=tid,
            card_id=f"card-{tid}",
            decision=kind,  # type: ignore[arg-type]
            score=0.99 if kind != "approve" else 0.01,
            model_version=CHAMPION,
            variant="champion",
            reasons=(),
            decided_at="2024-05-01T12:00:01.000+00:00",
            amount=amount,
            currency="EUR",
            shadow=shadow,
        )
    )


def cell(outcome: str, amount: float) -> Confusion:
    conf = Confusion()
    conf.update(outcome, amount)  # type: ignore[arg-type]
    return conf


def test_outcomes_per_version_and_a_reversal_moves_one_count(settings: Settings) -> None:
    shadow = Shadow(CHALLENGER, 0.9, "decline")

    async def body(r: Rig) -> None:
        s = r.s
        await r.deliver(s.topic_decisions, decision("tx-j", "approve", shadow=shadow), b"tx-j", 0)
        await r.deliver(s.topic_decisions, decision("tx-k", "decline"), b"tx-k", 1)
        assert r.out.on(s.topic_outcomes) == []  # nothing to say without a label

        await r.label("tx-j", True, 0)
        await r.label("tx-k", False, 1)
        got = {(o.transaction_id, o.variant): o.outcome for o in r.outcomes()}
        assert got == {
            ("tx-j", "champion"): "FN",
            ("tx-j", "shadow"): "TP",
            ("tx-k", "champion"): "FP",
        }
        assert [o.transaction_id for o in r.outcomes(s.topic_false_positives)] == ["tx-k"]
        assert [o.transaction_id for o in r.outcomes(s.topic_false_negatives)] == ["tx-j"]
        assert r.confusion(0, CHAMPION, "champion") == cell("FN", 310.0)
        assert r.confusion(0, CHALLENGER, "shadow") == cell("TP", 310.0)
        assert r.confusion(1, CHAMPION, "champion") == cell("FP", 310.0)

        n = len(r.outcomes())
        await r.label("tx-j", False, 0)
        await r.label("tx-k", True, 1)
        got2 = {(o.transaction_id, o.variant): o.outcome for o in r.outcomes()[n:]}
        assert got2 == {
            ("tx-j", "champion"): classify("approve", False),
            ("tx-j", "shadow"): classify("decline", False),
            ("tx-k", "champion"): "TP",
        }
        assert r.confusion(0, CHAMPION, "champion") == cell("TN", 310.0)
        assert r.confusion(1, CHAMPION, "champion") == cell("TP", 310.0)

        n = len(r.outcomes())
        await r.label("tx-k", True, 1)  # the same label again changes nothing
        assert len(r.outcomes()) == n
        assert r.confusion(1, CHAMPION, "champion") == cell("TP", 310.0)
        assert r.out.on(s.topic_feedback_dlq) == []

    run(settings, body)


def test_a_label_without_decision_is_held_then_dead_lettered(settings: Settings) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        rec = await r.label("tx-ghost", True)
        assert r.out.on(s.topic_outcomes) == []
        assert set(r.join.held()) == {b"tx-ghost"}
        assert orjson.loads(r.records.get(rec.partition, b"tx-ghost") or b"")["d"] is None
        assert r.join.sweep(s.feedback_grace_seconds) == 0  # not yet past a real grace period
        before = REGISTRY.get_sample_value("fraudstream_feedback_unknown_total") or 0.0
        assert r.join.sweep(0) == 1
        [dl] = r.out.on(s.topic_feedback_dlq)
        assert (dl.key, dl.value) == (b"tx-ghost", rec.value)
        assert dl.headers["error.class"] == "unknown_transaction"
        assert dl.headers["origin.topic"] == s.topic_feedback
        assert dl.headers["origin.partition"] == str(rec.partition)
        assert dl.headers["origin.offset"] == str(rec.offset)
        assert (
            REGISTRY.get_sample_value("fraudstream_feedback_unknown_total") or 0.0
        ) - before == 1
        assert r.join.held() == {}
        assert r.records.get(rec.partition, b"tx-ghost") is None
        assert r.join.sweep(0) == 0

    run(settings, body)


def test_a_label_before_its_decision_counts_when_the_decision_arrives(settings: Settings) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        await r.label("tx-late", False)
        await r.deliver(s.topic_decisions, decision("tx-late", "review", amount=55.0), b"tx-late")
        [o] = r.outcomes()
        assert (o.transaction_id, o.outcome, o.decision) == ("tx-late", "FP", "review")
        assert r.join.held() == {}
        assert r.join.sweep(0) == 0
        assert b"tx-late" in r.held.deleted  # the held label went once it was applied
        # A decision no label waits for (nearly all): the held table is read once, not written.
        await r.deliver(s.topic_decisions, decision("tx-new", "approve"), b"tx-new")
        assert b"tx-new" not in r.held.deleted

    run(settings, body)


def test_the_join_stops_reading_a_feedback_partition_while_many_of_its_labels_wait(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replay publishes labels with the history: read first, they would all wait in the
    # held-labels table while the decisions they wait for are read ever more slowly.
    monkeypatch.setattr(join_module, "PAUSE_HELD", 3)
    monkeypatch.setattr(join_module, "RESUME_HELD", 2)
    p0 = [(settings.topic_feedback, 0), (settings.topic_feedback_repartition, 0)]
    tids = [t for t in (f"tx-{i}" for i in range(40)) if home(t.encode(), 2) == 0]
    other = next(t for t in (f"tx-o{i}" for i in range(40)) if home(t.encode(), 2) == 1)

    async def body(r: Rig) -> None:
        s = r.s
        for tid in tids[:2]:
            await r.label(tid, False)
        await r.label(other, False)
        assert r.inputs.paused == []
        last = await r.label(tids[2], True)
        assert r.join.waiting() == {0: 3, 1: 1}
        assert r.inputs.paused == [p0]  # partition 1 is read on: it has to report
        # Still paused: asked again (a rebalance resumes what it assigns).
        await r.deliver(s.topic_decisions, decision(tids[0], "approve"), tids[0].encode())
        assert r.inputs.paused == [p0] * 2
        assert r.inputs.resumed == []
        await r.deliver(s.topic_decisions, decision(tids[1], "approve"), tids[1].encode())
        assert r.join.waiting()[0] == 1
        assert r.inputs.resumed == [p0]
        # Faust drops what it had fetched of a paused partition: read on after the last label
        # handled (none of the repartition topic: its first record is checked as after a seek).
        assert r.inputs.seeks == [((s.topic_feedback, 0), last.offset + 1)]
        assert len(r.outcomes()) == 2
        # A sweep, then the timer's pace, resumes without a record to handle.
        for tid in tids[3:6]:
            await r.label(tid, False)
        assert r.inputs.paused[-1] == p0
        r.join.sweep(0)
        await r.join.pace()
        assert r.inputs.resumed == [p0] * 2
        # After a rebalance (Faust resumes what it assigns) the pause is made again.
        for tid in tids[6:9]:
            await r.label(tid, False)
        n = len(r.inputs.paused)
        r.join.restart()
        await r.join.pace()
        assert len(r.inputs.paused) == n + 1
        assert r.join.offsets.to_verify() == {}

    run(settings, body)


def test_a_label_off_its_decision_s_partition_is_left_to_the_mover(settings: Settings) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        right = (murmur2(b"tx-p") & 0x7FFFFFFF) % 2
        await r.deliver(s.topic_decisions, decision("tx-p", "decline"), b"tx-p", right)
        rec = await r.label("tx-p", True, 1 - right)
        assert r.out.records == []  # neither joined here nor dead-lettered
        assert r.join.held() == {}
        r.join.offsets.verified((s.topic_feedback, 1 - right), rec.offset)
        assert r.join.committable((s.topic_feedback, 1 - right), None) == rec.offset + 1

    run(settings, body)


def test_a_moved_label_joins_in_its_decision_s_partition(settings: Settings) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        right = (murmur2(b"tx-m") & 0x7FFFFFFF) % 2
        await r.deliver(s.topic_decisions, decision("tx-m", "decline"), b"tx-m", right)
        fb = encode_feedback(Feedback("tx-m", True, "chargeback", "2024-05-03T09:00:00+00:00"))
        await r.deliver(s.topic_feedback_repartition, fb, b"tx-m", right)
        [o] = r.outcomes()
        assert (o.transaction_id, o.outcome) == ("tx-m", "TP")
        assert r.out.on(s.topic_feedback_dlq) == []

    run(settings, body)


def test_a_moved_label_still_off_its_partition_is_dead_lettered(settings: Settings) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        right = (murmur2(b"tx-w") & 0x7FFFFFFF) % 2
        fb = encode_feedback(Feedback("tx-w", True, "chargeback", "2024-05-03T09:00:00+00:00"))
        await r.deliver(s.topic_feedback_repartition, fb, b"tx-w", 1 - right)
        [dead] = r.out.on(s.topic_feedback_dlq)
        assert dead.headers["error.class"] == "wrong_partition"
        assert dead.headers["origin.topic"] == s.topic_feedback_repartition
        assert "partitions were added" in dead.headers["error.message"]
        assert r.outcomes() == []

    run(settings, body)


def test_pruning_deletes_the_records_of_decisions_past_the_horizon(settings: Settings) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        for i in range(5):
            await r.deliver(s.topic_decisions, decision(f"tx-{i}", "approve"), f"tx-{i}".encode())
        await r.label("tx-ghost", True)  # held, no decision: the sweep's business
        decided = datetime.fromisoformat(
            orjson.loads(r.records.get(0, b"tx-0") or b"{}")["d"][6].replace("Z", "+00:00")
        ).timestamp()
        horizon = s.decision_retention_days * 86400
        assert await r.join.prune(now=decided + horizon - 60) == 0
        before = dict(r.records.data)
        r.inputs.given_away = {1}  # its records are the new owner's to prune
        kept = {k for k, (p, _) in before.items() if p == 1 and k != b"tx-ghost"}
        assert await r.join.prune(now=decided + horizon + 60, chunk=2) == 5 - len(kept)
        r.inputs.given_away = set()
        assert await r.join.prune(now=decided + horizon + 60, chunk=2) == len(kept)
        assert set(r.records.data) == {b"tx-ghost"}
        for i in range(5):  # deleted in the partition the record was written in
            key = f"tx-{i}".encode()
            assert r.records.deleted[key] == before[key][0]
        assert await r.join.prune(now=decided + horizon + 60) == 0

    run(settings, body)


def test_the_join_commits_one_past_the_last_record_once_the_first_hole_is_checked(
    settings: Settings,
) -> None:
    async def body(r: Rig) -> None:
        s = r.s
        tp = (s.topic_decisions, 0)
        r.offset = 7  # the group's committed offset was 5: offsets 5..6 are a hole
        await r.deliver(s.topic_decisions, decision("tx-1", "approve"), b"tx-1", 0)
        await r.deliver(s.topic_decisions, decision("tx-2", "approve"), b"tx-2", 0)
        assert r.join.committable(tp, 5) is None  # the hole before 7 is not checked yet
        assert r.join.offsets.to_verify() == {tp: 7}
        r.join.offsets.verified(tp, 7)
        assert r.join.committable(tp, 5) == 9
        assert r.join.committable(tp, 9) is None

    run(settings, body)


@pytest.mark.parametrize("bad", [b"{", b""])
def test_an_undecodable_decision_is_dead_lettered_as_the_join_s(
    settings: Settings, bad: bytes
) -> None:
    async def body(r: Rig) -> None:
        await r.deliver(r.s.topic_decisions, bad, b"tx-x", 0)
        [dead] = r.out.on(r.s.topic_feedback_dlq)
        assert dead.value == bad
        assert dead.headers["origin.topic"] == r.s.topic_decisions
        assert r.out.flushes == 1  # flushed before the batch's offsets may be committed

    run(settings, body)
