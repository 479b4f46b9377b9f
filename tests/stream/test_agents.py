"""The real Faust agents, driven without a broker.

How: each test builds the app with ``create_app(settings, serving, output=RecordingOutput())``
(``table_store="memory://"``) and opens Faust's own ``agent.test_context()`` for the two agents.
``test_context`` (faust-streaming 0.15, ``faust/agents/agent.py``) clones the agent onto an
in-memory channel and runs the *agent function itself* -- here ``stream.take_events(...)`` and the
handlers -- in the app's event loop, with Faust's ``current_event`` set by the stream, so the
memory-backed tables (card state, join records, metrics) and their changelog path are exercised as
in production. Nothing calls ``tx_handler.handle`` directly.

Details of that harness:

* The test channel is given a raw bytes schema (``key_serializer=value_serializer="raw"``),
  like the production topics, so undecodable bytes reach the agent untouched instead of failing in
  Faust's JSON codec before it.
* ``AgentTestWrapper.put`` names every message after the agent's source topic, which for the join
  agent (three topics) is ``"<internal>"``. ``deliver`` below therefore builds the
  ``faust.types.tuples.Message`` the way ``AgentTestWrapper.to_message`` does, but with the real
  topic name (decisions / scores / feedback), decodes it through the channel and puts the event on
  it, exactly as ``put`` does.
* The ``take_events`` batches are real: events put with ``wait=False`` land in one batch, events
  put one after the other with ``settle`` in between land in separate batches.
* Reading ``app.consumer`` (the streams do) builds Faust's consumer thread with a private event
  loop that is never started; ``rig`` closes it so that no "unclosed event loop" finalizer runs
  later, inside pytest's assertion rewriter.
* ``put(wait=True)`` only waits until the stream has *seen* a value; ``take_events`` processes
  it later, in a batch. ``settle`` waits until Faust has acked every event, which happens after
  the batch's handler returns, and re-raises an agent crash.

``RecordingOutput`` subclasses ``fraudstream.app.agents.Output`` without its Kafka producer:
``send`` records, ``flush`` counts, and ``dead_letter`` is the production method (headers included).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import numpy as np
import orjson
import pytest
from aiokafka.partitioner import murmur2
from faust.types import TP
from faust.types.tuples import Message
from prometheus_client import REGISTRY

from fraudstream.app.agents import Barrier, Output, decide_batches, divert_records
from fraudstream.app.app import FraudApp, create_app
from fraudstream.app.serving import ServingManager
from fraudstream.core import engine, features
from fraudstream.core.messages import (
    Decision,
    Feedback,
    Routing,
    decode_decision,
    decode_outcome,
    decode_score,
    decode_transaction,
    encode_decision,
    encode_feedback,
)
from fraudstream.core.outcomes import Confusion, classify
from fraudstream.core.policy import decide_many
from fraudstream.core.replay import replay
from fraudstream.core.routing import assign_many
from fraudstream.errors import TransactionAborted
from fraudstream.settings import Settings

pytestmark = pytest.mark.stream

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
CHAMPION = "champion-v1"
CHALLENGER = "challenger-v2"
HAS_CHALLENGER = (MODELS / CHALLENGER / "metadata.json").is_file()
SALT = "agents-test"


def _routing() -> Routing:
    if HAS_CHALLENGER:
        return Routing(
            champion=CHAMPION, challenger=CHALLENGER, challenger_share=0.5, shadow=True, salt=SALT
        )
    return Routing(champion=CHAMPION, salt=SALT)


# --------------------------------------------------------------------------------------------
# The recording sink and the harness


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


class RecordingOutput(Output):
    """``Output`` without Kafka: what would be produced is recorded, in order."""

    def __init__(self) -> None:  # no producer, no delivery tracker
        self.records: list[Sent] = []
        self.flushes = 0

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        assert key is None or isinstance(key, bytes)
        assert value is None or isinstance(value, bytes)
        hdrs = {k: v.decode() for k, v in headers or ()}
        assert len(hdrs) == len(headers or ()), "a header name repeats"
        self.records.append(Sent(topic, key, value, hdrs))

    async def flush(self) -> None:
        self.flushes += 1

    def checkpoint(self) -> Barrier:
        # Nothing is in flight: every "send" above is already recorded.
        return Barrier().close(asyncio.get_running_loop())

    def on(self, topic: str) -> list[Sent]:
        return [r for r in self.records if r.topic == topic]


class RecordingWriters:
    """The per-partition transactions without Kafka: sends land in ``out`` in order (so the
    tests read one stream of records); commits fold the partition's changelog records into
    ``changelog``, which a later ``open`` restores, as the broker would with read_committed."""

    def __init__(self, out: RecordingOutput) -> None:
        self.out = out
        self.changelog: dict[int, list[tuple[str, bytes | None]]] = {}
        self._open_log: dict[int, list[tuple[str, bytes | None]]] = {}
        self.opened: list[int] = []
        self.closed: list[int] = []
        self.commits: list[tuple[int, int | None]] = []
        self.open_out: dict[int, list[Sent]] = {}
        self.committed: list[Sent] = []  # what read_committed readers would see
        self.fail_commits = 0  # the next N commits are aborted by "Kafka"
        self.holes: set[tuple[int, int, int]] = set()  # offset ranges that "hold records"
        self.probed: list[tuple[int, int, int]] = []

    async def open(self, partition: int) -> tuple[list[tuple[str, bytes | None]], int | None]:
        self.opened.append(partition)
        self._open_log[partition] = []
        self.open_out[partition] = []
        return list(self.changelog.get(partition, [])), None

    async def has_records(self, partition: int, start: int, end: int) -> bool:
        self.probed.append((partition, start, end))
        return (partition, start, end) in self.holes

    def send(
        self,
        partition: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
        to_partition: int | None = None,
    ) -> None:
        assert partition in self._open_log, "a send on a partition that was not opened"
        if to_partition is not None:
            assert to_partition == partition, "card state must stay in its own partition"
            assert key is not None
            self._open_log[partition].append((key.decode(), value))
            return
        self.out.send(topic, key, value, headers)
        self.open_out[partition].append(self.out.records[-1])

    async def commit(self, partition: int, next_offset: int | None) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise TransactionAborted("test: the broker aborted this transaction")
        self.committed.extend(self.open_out[partition])
        self.open_out[partition] = []
        self.changelog.setdefault(partition, []).extend(self._open_log[partition])
        self._open_log[partition] = []
        self.commits.append((partition, next_offset))

    async def abort(self, partition: int) -> None:
        self._open_log[partition] = []
        self.open_out[partition] = []

    async def close(self, partition: int) -> None:
        self._open_log.pop(partition, None)
        self.closed.append(partition)

    def committed_on(self, topic: str) -> list[Sent]:
        return [r for r in self.committed if r.topic == topic]


@dataclass
class Rig:
    fa: FraudApp
    out: RecordingOutput
    writers: RecordingWriters
    s: Settings
    tx: Any  # AgentTestWrapper of "score-transactions"
    join: Any  # AgentTestWrapper of "join-feedback"

    async def card(self, card: str) -> engine.CardRecord | None:
        """The card's committed record (after committing what is open)."""
        handler = self.fa.tx_handler
        await handler.commit_all()
        found = [handler.store.get(p, card) for p in handler.store.partitions()]
        return next((rec for rec in found if rec is not None), None)

    def decisions(self) -> dict[str, Decision]:
        recs = self.out.on(self.s.topic_decisions)
        by_id = {r.key.decode(): decode_decision(r.value) for r in recs if r.key and r.value}
        assert len(by_id) == len(recs), "two decisions for one transaction_id"
        for r in recs:
            assert r.key == decode_decision(r.value).transaction_id.encode()
        return by_id

    def scores(self, transaction_id: str) -> list[Any]:
        return [
            decode_score(r.value)
            for r in self.out.on(self.s.topic_scores)
            if r.key == transaction_id.encode()
        ]

    def confusion(self, partition: int, version: str, variant: str) -> Confusion:
        raw = self.fa.metrics_table.get(f"{partition}|{version}|{variant}".encode())
        return Confusion.from_dict(orjson.loads(raw)) if raw else Confusion()


RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, routing: Routing | None = None, writers: RecordingWriters | None = None
) -> AsyncIterator[Rig]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        table_store="memory://",
        models_dir=MODELS,
        data_dir=tmp_path,
        partitions=2,
        feedback_grace_seconds=300.0,
    )
    serving = ServingManager(settings.models_dir)
    serving.start_sync(routing or _routing())
    out = RecordingOutput()
    if writers is None:
        writers = RecordingWriters(out)
    else:
        writers.out = out
    fa = create_app(settings, serving, output=out, writers=writers)
    fa.tx_handler.check_assignment = False  # no consumer group under test_context
    assert fa.output is out
    app = fa.app
    app.finalize()
    tx_agent = app.agents["score-transactions"]
    join_agent = app.agents["join-feedback"]
    try:
        async with (
            tx_agent.test_context(channel=app.channel(schema=faust.Schema(**RAW))) as tx,
            join_agent.test_context(channel=app.channel(schema=faust.Schema(**RAW))) as join,
        ):
            yield Rig(fa, out, writers, settings, tx, join)
    finally:
        # The streams touch ``app.consumer``, which builds (but never starts) Faust's consumer
        # thread with an event loop of its own. Unclosed, its finalizer warned at a random later
        # moment, once inside pytest's assertion rewriter ("AST constructor recursion depth
        # mismatch", CPython 3.11).
        consumer = app._consumer
        if consumer is not None:
            consumer._thread.thread_loop.close()


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout=30))
    gc.collect()  # finalizers of this test's Faust objects run now, not during another test


async def deliver(
    agent: Any, topic: str, value: bytes | None, key: bytes | None, partition: int | None = None
) -> Any:
    """``AgentTestWrapper.put(wait=False)`` with the real source topic on the message, in the
    partition Kafka's default partitioner gives ``key`` (unless ``partition`` says otherwise)."""
    if partition is None:
        partition = (murmur2(key) & 0x7FFFFFFF) % 2 if key else 0
    message = Message(
        topic=topic,
        partition=partition,
        offset=agent.sent_offset,
        timestamp=time.time(),
        timestamp_type=0,
        headers=None,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        generation_id=agent.app.consumer_generation_id,
    )
    channel = agent.stream().channel
    event = await channel.decode(message)
    await channel.put(event)
    agent.sent_offset += 1
    return event


async def settle(agent: Any, events: Sequence[Any], timeout: float = 10.0) -> None:
    """Wait until Faust has acked ``events`` (their batch's handler has returned)."""
    deadline = time.monotonic() + timeout
    while not all(ev.message.acked for ev in events):
        if agent._crash_reason is not None:
            raise agent._crash_reason
        assert time.monotonic() < deadline, "the agent did not process its events in time"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------------
# Messages

_DROP = object()


def tx_bytes(
    tid: str,
    card: str,
    *,
    amount: Any = 42.5,
    when: str = "2024-05-01T12:00:00+00:00",
    merchant: str = "m-1",
    **extra: Any,
) -> bytes:
    obj: dict[str, Any] = {
        "transaction_id": tid,
        "card_id": card,
        "merchant_id": merchant,
        "amount": amount,
        "currency": "EUR",
        "event_time": when,
        "mcc": 5411,
        "country": "FR",
        "channel": "ecom",
        "device_id": f"dev-{card}",
        "schema_version": 1,
    }
    obj.update(extra)
    return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})


def label_bytes(tid: str, is_fraud: bool, reported_at: str = "2024-05-03T09:00:00+00:00") -> bytes:
    return encode_feedback(Feedback(tid, is_fraud, "chargeback", reported_at))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def expected_scores(rig_: Rig, payloads: Sequence[bytes]) -> dict[tuple[str, str], float]:
    """(transaction_id, version) -> the score of the training path: replay, then predict."""
    txs = [decode_transaction(p) for p in payloads]
    x, ids = replay(txs, with_entities=False)  # the worker has no entity state yet
    serving = rig_.fa.serving.current
    assert serving is not None
    out: dict[tuple[str, str], float] = {}
    for version, served in serving.models.items():
        for tid, p in zip(ids, served.model.predict(x), strict=True):
            out[(tid, version)] = float(p)
    return out


# --------------------------------------------------------------------------------------------
# (1) valid transactions: one decision each, one score per scoring version


def test_valid_transactions_get_one_decision_and_one_score_per_version(tmp_path: Path) -> None:
    routing = _routing()
    cards = [f"card-{i:03d}" for i in range(40)]
    if HAS_CHALLENGER:
        variants = dict(zip(cards, assign_many(cards, SALT, 0.5), strict=True))
        # Six cards, both variants among them.
        champs = [c for c in cards if variants[c] == "champion"][:3]
        chall = [c for c in cards if variants[c] == "challenger"][:3]
        assert len(champs) == 3
        assert len(chall) == 3
        cards = champs + chall
    else:
        variants = dict.fromkeys(cards, "champion")
        cards = cards[:6]
    payloads = [
        tx_bytes(f"tx-{i}", card, amount=10.0 + 37.0 * i, merchant=f"m-{i}")
        for i, card in enumerate(cards)
    ]

    async def body() -> None:
        async with rig(tmp_path, routing) as r:
            before = counter("fraudstream_transactions_received_total")
            # wait=False: all six land in one take_events batch.
            events = [
                await r.tx.put(p, key=c.encode(), wait=False)
                for p, c in zip(payloads, cards, strict=True)
            ]
            await settle(r.tx, events)

            decisions = r.decisions()
            assert sorted(decisions) == sorted(f"tx-{i}" for i in range(len(cards)))
            assert r.out.on(r.s.topic_dlq) == []
            assert counter("fraudstream_transactions_received_total") - before == len(cards)
            expected = expected_scores(r, payloads)
            serving = r.fa.serving.current
            assert serving is not None
            versions_used = set()
            for i, card in enumerate(cards):
                tid = f"tx-{i}"
                d = decisions[tid]
                assert d.card_id == card
                assert d.amount == 10.0 + 37.0 * i
                assert d.currency == "EUR"
                assert d.variant == variants[card]
                want_version = CHALLENGER if d.variant == "challenger" else CHAMPION
                assert d.model_version == want_version
                versions_used.add(d.model_version)
                assert d.score == pytest.approx(expected[(tid, d.model_version)], abs=1e-6)
                [kind] = decide_many(
                    np.array([d.score]), serving.models[d.model_version].thresholds
                )
                assert d.decision == kind
                assert (d.decision == "approve") == (d.reasons == ())

                scores = r.scores(tid)
                scoring_versions = [CHAMPION, CHALLENGER] if HAS_CHALLENGER else [CHAMPION]
                assert sorted(sc.model_version for sc in scores) == sorted(scoring_versions)
                by_version = {sc.model_version: sc for sc in scores}
                own = by_version[d.model_version]
                assert own.role == d.variant
                assert own.score == d.score
                assert own.decision == d.decision
                for sc in scores:
                    assert sc.score == pytest.approx(expected[(tid, sc.model_version)], abs=1e-6)
                    if sc.model_version != d.model_version:
                        assert sc.role == "shadow"
                # The card's record remembers the transaction.
                rec = await r.card(card)
                assert rec is not None
                assert list(rec.seen) == [tid]
                assert rec.state is not None
                assert rec.state.n == 1
            if HAS_CHALLENGER:
                assert versions_used == {CHAMPION, CHALLENGER}

    run(body)


# --------------------------------------------------------------------------------------------
# (2) bad input: dead-lettered with its reason, the agent carries on

BAD: list[tuple[str, bytes | None, bytes, str, str]] = [
    # (case, key, value, error.class, a fragment of error.message)
    ("not_json", b"card-x", b'{"transaction_id": "tx-bad", ', "not_json", "not JSON"),
    ("not_utf8", b"card-x", b'{"transaction_id": "\xff\xfe"}', "not_utf8", "UTF-8"),
    ("empty", b"card-x", b"", "empty", "empty transaction"),
    (
        "missing_field",
        b"card-x",
        tx_bytes("tx-bad", "card-x", merchant_id=_DROP),
        "schema",
        "merchant_id",
    ),
    ("negative_amount", b"card-x", tx_bytes("tx-bad", "card-x", amount=-5), "schema", "amount"),
    (
        "bad_currency",
        b"card-x",
        tx_bytes("tx-bad", "card-x", currency="EURO"),
        "bad_currency",
        "currency",
    ),
    (
        "bad_timestamp",
        b"card-x",
        tx_bytes("tx-bad", "card-x", when="2024-02-30T12:00:00+00:00"),
        "bad_timestamp",
        "event_time",
    ),
    (
        "no_utc_offset",
        b"card-x",
        tx_bytes("tx-bad", "card-x", when="2024-05-01T12:00:00"),
        "bad_timestamp",
        "event_time",
    ),
    ("key_mismatch", b"card-y", tx_bytes("tx-bad", "card-x"), "key_mismatch", "card_id"),
    ("no_key", None, tx_bytes("tx-bad", "card-x"), "key_mismatch", "card_id"),
]


@pytest.mark.parametrize(
    ("key", "value", "reason", "fragment"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input_goes_to_the_dlq_and_the_next_event_is_decided(
    tmp_path: Path, key: bytes | None, value: bytes, reason: str, fragment: str
) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            before = counter("fraudstream_dead_letters_total", reason=reason, source="transactions")
            bad = await r.tx.put(value, key=key, partition=1)
            good = await r.tx.put(tx_bytes("tx-good", "card-ok"), key=b"card-ok", partition=1)
            await settle(r.tx, [bad, good])

            [dl] = r.out.on(r.s.topic_dlq)
            assert dl.key == key
            assert dl.value == value  # the original bytes, untouched
            assert dl.headers["error.class"] == reason
            assert fragment in dl.headers["error.message"]
            assert dl.headers["origin.topic"] == r.s.topic_transactions
            assert dl.headers["origin.partition"] == "1"
            assert dl.headers["origin.offset"] == str(bad.message.offset) == "0"
            assert set(dl.headers) == {
                "error.class",
                "error.message",
                "origin.topic",
                "origin.partition",
                "origin.offset",
            }
            after = counter("fraudstream_dead_letters_total", reason=reason, source="transactions")
            assert after - before == 1
            # The next valid event was decided, and the bad one left no trace in card state.
            assert list(r.decisions()) == ["tx-good"]
            assert await r.card("card-x") is None

    run(body)


def test_bad_records_inside_a_batch_do_not_sink_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            events = []
            for i, (_, key, value, _, _) in enumerate(BAD):
                events.append(await r.tx.put(value, key=key, wait=False))
                card = f"card-{i}"
                events.append(
                    await r.tx.put(tx_bytes(f"tx-{i}", card), key=card.encode(), wait=False)
                )
            await settle(r.tx, events)
            assert sorted(r.decisions()) == sorted(f"tx-{i}" for i in range(len(BAD)))
            dlq = r.out.on(r.s.topic_dlq)
            assert [d.headers["error.class"] for d in dlq] == [case[3] for case in BAD]
            assert [d.value for d in dlq] == [case[2] for case in BAD]
            assert [d.headers["origin.offset"] for d in dlq] == [
                str(2 * i) for i in range(len(BAD))
            ]

    run(body)


# --------------------------------------------------------------------------------------------
# (3) a repeated transaction_id is decided once


def test_repeated_transaction_id_gets_one_decision(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            before = counter("fraudstream_duplicates_total")
            first = tx_bytes("tx-dup", "card-d", amount=80.0)
            # Twice in one batch...
            evs = [
                await r.tx.put(first, key=b"card-d", wait=False),
                await r.tx.put(first, key=b"card-d", wait=False),
            ]
            await settle(r.tx, evs)
            # ...and again in a later batch (a replay), with a different body: the id decides.
            again = tx_bytes("tx-dup", "card-d", amount=999.0, when="2024-05-01T12:05:00+00:00")
            ev = await r.tx.put(again, key=b"card-d")
            await settle(r.tx, [ev])

            decisions = r.decisions()
            assert list(decisions) == ["tx-dup"]
            assert decisions["tx-dup"].amount == 80.0
            assert len(r.scores("tx-dup")) == (2 if HAS_CHALLENGER else 1)
            assert r.out.on(r.s.topic_dlq) == []
            assert counter("fraudstream_duplicates_total") - before == 2
            rec = await r.card("card-d")
            assert rec is not None
            assert rec.state is not None
            assert rec.state.n == 1  # the duplicates did not enter the card's history
            assert list(rec.seen) == ["tx-dup"]

    run(body)


# --------------------------------------------------------------------------------------------
# exactly-once per input partition (the Kafka side is in tests/integration/test_exactly_once.py)


def test_an_aborted_transaction_is_decided_again_from_the_state_it_saw(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            before = counter("fraudstream_kafka_transactions_aborted_total")
            evs = [
                await r.tx.put(
                    tx_bytes(f"tx-{i}", "card-ab", amount=10.0 * (i + 1)),
                    key=b"card-ab",
                    wait=False,
                )
                for i in range(3)
            ]
            await settle(r.tx, evs)
            r.writers.fail_commits = 1
            rec = await r.card("card-ab")  # commits: the first attempt is aborted
            assert counter("fraudstream_kafka_transactions_aborted_total") - before == 1
            committed = r.writers.committed_on(r.s.topic_decisions)
            assert sorted(x.key for x in committed) == [b"tx-0", b"tx-1", b"tx-2"]
            # Decided again from the committed state, not from the aborted attempt's.
            assert rec is not None
            assert rec.state is not None
            assert rec.state.n == 3
            assert list(rec.seen) == ["tx-0", "tx-1", "tx-2"]
            # Every committed offset covers the events in its transaction.
            assert r.writers.commits[-1][1] == evs[-1].message.offset + 1

    run(body)


class GatedWriters(RecordingWriters):
    """Commits of the partitions in ``held`` wait until the test opens the gate."""

    def __init__(self, out: RecordingOutput) -> None:
        super().__init__(out)
        self.held: set[int] = set()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def commit(self, partition: int, next_offset: int | None) -> None:
        if partition in self.held:
            self.waiting.set()
            await self.gate.wait()
        await super().commit(partition, next_offset)


def test_a_partition_committing_holds_its_events_and_the_others_keep_deciding(
    tmp_path: Path,
) -> None:
    """Commits run in the background: while partition 0's transaction commits, its new events
    wait (its producer cannot take records), partition 1's are decided at once, and partition
    0's are decided after the commit, in offset order, into its next transaction."""
    writers = GatedWriters(RecordingOutput())

    async def body() -> None:
        async with rig(tmp_path, writers=writers) as r:
            handler = r.fa.tx_handler
            handler.interval_s = 0.0  # every batch starts the commit of its dirty partitions
            writers.held = {0}
            topic = r.s.topic_transactions

            async def one(tid: str, card: str, p: int) -> Any:
                ev = await deliver(r.tx, topic, tx_bytes(tid, card), card.encode(), partition=p)
                await settle(r.tx, [ev])
                return ev

            await one("tx-a", "card-0", 0)
            await asyncio.wait_for(writers.waiting.wait(), 5)  # partition 0 is committing
            late = [await one(f"tx-b{i}", "card-0", 0) for i in range(2)]
            await one("tx-c", "card-1", 1)
            decided = r.decisions()
            assert "tx-c" in decided
            assert "tx-b0" not in decided
            assert "tx-b1" not in decided
            assert [ev.message.offset for ev in handler.deferred[0]] == [
                ev.message.offset for ev in late
            ]

            writers.gate.set()
            deadline = time.monotonic() + 5
            while "tx-b1" not in r.decisions():
                assert time.monotonic() < deadline, "the held events were not decided"
                await asyncio.sleep(0.01)
            assert handler.deferred == {}
            await handler.commit_all()
            committed = [x.key for x in writers.committed_on(r.s.topic_decisions)]
            assert sorted(committed) == [b"tx-a", b"tx-b0", b"tx-b1", b"tx-c"]
            assert committed.index(b"tx-b0") < committed.index(b"tx-b1")
            assert handler.next_offset[0] == late[-1].message.offset + 1
            rec = await r.card("card-0")
            assert rec is not None
            assert list(rec.seen) == ["tx-a", "tx-b0", "tx-b1"]

    run(body)


def test_a_new_owner_restores_committed_card_state_only(tmp_path: Path) -> None:
    writers: RecordingWriters | None = None

    async def first_owner() -> None:
        nonlocal writers
        async with rig(tmp_path / "a") as r:
            ev = await r.tx.put(tx_bytes("tx-a", "card-r", amount=50.0), key=b"card-r")
            await settle(r.tx, [ev])
            await r.fa.tx_handler.commit_all()
            # Decided but never committed: the owner dies here.
            ev = await r.tx.put(tx_bytes("tx-b", "card-r", amount=70.0), key=b"card-r")
            await settle(r.tx, [ev])
            writers = r.writers

    async def second_owner() -> None:
        assert writers is not None
        async with rig(tmp_path / "b", writers=writers) as r:
            # The new owner reads both again from the committed offset.
            evs = [
                await r.tx.put(tx_bytes("tx-a", "card-r", amount=50.0), key=b"card-r", wait=False),
                await r.tx.put(tx_bytes("tx-b", "card-r", amount=70.0), key=b"card-r", wait=False),
            ]
            await settle(r.tx, evs)
            rec = await r.card("card-r")
            assert list(r.decisions()) == ["tx-b"]  # tx-a was committed: not decided twice
            assert rec is not None
            assert rec.state is not None
            assert rec.state.n == 2
            assert list(rec.seen) == ["tx-a", "tx-b"]

    run(first_owner)
    run(second_owner)


def test_a_hole_in_the_delivered_offsets_is_fetched_again_before_going_on(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            topic = r.s.topic_transactions

            async def at(offset: int, tid: str) -> Any:
                r.tx.sent_offset = offset
                return await deliver(r.tx, topic, tx_bytes(tid, "c-h"), b"c-h", partition=0)

            first = [await at(0, "tx-0"), await at(1, "tx-1")]
            await settle(r.tx, first)
            # Offsets 2..3 hold records, but Faust delivered 4 first (a rebalance lost them).
            r.writers.holes.add((0, 2, 4))
            ev = await at(4, "tx-4")
            await settle(r.tx, [ev])
            assert r.fa.tx_handler.rewinding[0][0] == 2
            assert sorted(r.decisions()) == ["tx-0", "tx-1"]  # tx-4 waits for the refetch
            # The refetch: 2, 3, then 4 again.
            again = [await at(2, "tx-2"), await at(3, "tx-3"), await at(4, "tx-4")]
            await settle(r.tx, again)
            assert sorted(r.decisions()) == ["tx-0", "tx-1", "tx-2", "tx-3", "tx-4"]
            await r.fa.tx_handler.commit_all()
            assert r.writers.commits[-1] == (0, 5)
            # A hole without records (commit markers of a transactional producer) is accepted.
            ev = await at(9, "tx-9")
            await settle(r.tx, [ev])
            assert (0, 5, 9) in r.writers.probed
            assert "tx-9" in r.decisions()

    run(body)


def test_partitions_given_away_are_let_go(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            evs = [
                await deliver(
                    r.tx,
                    r.s.topic_transactions,
                    tx_bytes(f"tx-{p}", f"c-{p}"),
                    f"c-{p}".encode(),
                    partition=p,
                )
                for p in (0, 1)
            ]
            await settle(r.tx, evs)
            handler = r.fa.tx_handler
            await handler.commit_all()
            assert handler.store.partitions() == {0, 1}
            await handler.on_assigned({0})
            assert handler.store.partitions() == {0}
            assert r.writers.closed == [1]

    run(body)


class FetchingConsumer:
    """The two things ``divert_records`` uses of Faust's consumer: its fetch step, answering
    with the record maps queued here, and its flow flag."""

    def __init__(self) -> None:
        self.flow_active = True
        self.fetches: list[dict[Any, list[Any]]] = []

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return self.fetches.pop(0), None


@dataclass(frozen=True)
class Fetched:  # the fields of an aiokafka ConsumerRecord that the scoring path reads
    offset: int
    key: bytes
    value: bytes
    timestamp: int


def test_fetched_transactions_are_decided_a_fetch_at_a_time_in_batches(tmp_path: Path) -> None:
    """The production path: records leave Faust's fetch step before its per-event delivery,
    other topics' records stay with Faust, and the handler gets batches of at most the batch
    size, in offset order per partition. Records fetched while Faust's flow is stopped (a
    rebalance) are dropped, to be fetched again after the seek."""

    async def body() -> None:
        async with rig(tmp_path) as r:
            tx_topic = r.s.topic_transactions
            fetched = {
                TP(tx_topic, p): [
                    Fetched(
                        o,
                        f"c-{p}-{o % 2}".encode(),
                        tx_bytes(f"tx-{p}-{o}", f"c-{p}-{o % 2}"),
                        1_700_000_000_123 + o,
                    )
                    for o in range(5)
                ]
                for p in (0, 1)
            }
            other = TP(r.s.topic_feedback, 0)
            consumer = FetchingConsumer()
            consumer.fetches.append({**fetched, other: ["kept"]})
            batches: list[list[tuple[int, int]]] = []
            handler = r.fa.tx_handler
            handle = handler.handle

            async def recording_handle(events: Sequence[Any]) -> None:
                batches.append([(ev.message.partition, ev.message.offset) for ev in events])
                assert all(ev.message.timestamp % 1 > 0.12 for ev in events)  # ms → seconds
                await handle(events)

            handler.handle = recording_handle  # type: ignore[method-assign]
            feed = divert_records(consumer, tx_topic)
            assert divert_records(consumer, tx_topic) is feed  # a restarted agent: same feed
            task = asyncio.ensure_future(decide_batches(feed, handler, 3))
            try:
                left, _ = await consumer._wait_next_records(1.0)
                assert left == {other: ["kept"]}
                deadline = time.monotonic() + 10
                while len(r.decisions()) < 10:
                    assert time.monotonic() < deadline, "the fed records were not decided"
                    await asyncio.sleep(0.01)
                assert sorted(r.decisions()) == sorted(
                    f"tx-{p}-{o}" for p in (0, 1) for o in range(5)
                )
                assert all(len(b) <= 3 for b in batches)
                for p in (0, 1):
                    seen = [o for b in batches for q, o in b if q == p]
                    assert seen == list(range(5))
                assert handler.next_offset == {0: 5, 1: 5}

                consumer.flow_active = False
                late = {TP(tx_topic, 0): [Fetched(5, b"c-0-1", tx_bytes("tx-late", "c-0-1"), 1)]}
                consumer.fetches.append(dict(late))
                left, _ = await consumer._wait_next_records(1.0)
                assert left == {}
                await asyncio.sleep(0.1)
                assert "tx-late" not in r.decisions()
                assert feed.empty()
            finally:
                task.cancel()

    run(body)


# --------------------------------------------------------------------------------------------
# (4) per-card state


@pytest.mark.parametrize("same_batch", [False, True], ids=["two_batches", "one_batch"])
def test_second_transaction_of_a_card_sees_the_first(tmp_path: Path, same_batch: bool) -> None:
    card = "card-state"
    first = tx_bytes("tx-a", card, amount=20.0, merchant="m-a")
    second = tx_bytes("tx-b", card, amount=900.0, merchant="m-b", when="2024-05-01T12:20:00+00:00")
    other = tx_bytes("tx-o", "card-other", amount=20.0, merchant="m-a")

    async def body() -> None:
        async with rig(tmp_path) as r:
            if same_batch:
                evs = [
                    await r.tx.put(p, key=k, wait=False)
                    for p, k in [
                        (first, card.encode()),
                        (other, b"card-other"),
                        (second, card.encode()),
                    ]
                ]
                await settle(r.tx, evs)
            else:
                for p, k in [
                    (first, card.encode()),
                    (other, b"card-other"),
                    (second, card.encode()),
                ]:
                    await settle(r.tx, [await r.tx.put(p, key=k)])

            decisions = r.decisions()
            assert sorted(decisions) == ["tx-a", "tx-b", "tx-o"]
            # The training path: both transactions of the card, in event-time order.
            txs = [decode_transaction(first), decode_transaction(second)]
            x, ids = replay(txs, with_entities=False)
            assert ids == ["tx-a", "tx-b"]
            row = features.row_as_dict(x[1])
            assert row["card_count_1h"] == 1.0
            assert row["card_amount_1h"] == 20.0
            assert row["secs_since_prev"] == 1200.0
            assert row["new_merchant"] == 1.0
            assert row["amount_to_card_avg"] == 900.0 / 20.0
            serving = r.fa.serving.current
            assert serving is not None
            d = decisions["tx-b"]
            want = float(serving.models[d.model_version].model.predict(x)[1])
            assert d.score == pytest.approx(want, abs=1e-6)
            # Every version scoring it saw the same history.
            for sc in r.scores("tx-b"):
                want_v = float(serving.models[sc.model_version].model.predict(x)[1])
                assert sc.score == pytest.approx(want_v, abs=1e-6)
            # The other card's first transaction looks like tx-a did, not like a second one.
            assert decisions["tx-o"].score == pytest.approx(decisions["tx-a"].score, abs=1e-6)

            rec = await r.card(card)
            assert rec is not None
            assert rec.state is not None
            assert rec.state.n == 2
            assert rec.state.sum_c == 92_000
            assert list(rec.seen) == ["tx-a", "tx-b"]

    run(body)


# --------------------------------------------------------------------------------------------
# (5) the feedback join


def _outcomes(r: Rig, topic: str) -> list[Any]:
    return [decode_outcome(rec.value) for rec in r.out.on(topic)]


def _cell(outcome: str, amount: float) -> Confusion:
    """The metrics row after exactly one ``outcome`` of ``amount``."""
    conf = Confusion()
    conf.update(outcome, amount)  # type: ignore[arg-type]
    return conf


def test_join_emits_outcomes_and_reversals_move_one_count(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            s = r.s
            # A real decision (and its scores) from the scoring agent, on partition 0...
            ev = await r.tx.put(tx_bytes("tx-j", "card-j"), key=b"card-j")
            await settle(r.tx, [ev])
            [dec_rec] = r.out.on(s.topic_decisions)
            d = decode_decision(dec_rec.value)
            shadow = [sc for sc in r.scores("tx-j") if sc.role == "shadow"]
            assert len(shadow) == (1 if HAS_CHALLENGER else 0)
            # ...plus a declined one written by hand, on partition 1, so that the flagged cells
            # are covered too and each metrics row (partition|version|variant) has one outcome.
            flagged = Decision(
                transaction_id="tx-k",
                card_id="card-k",
                decision="decline",
                score=0.99,
                model_version=CHAMPION,
                variant="champion",
                reasons=(),
                decided_at="2024-05-01T12:00:01.000+00:00",
                amount=310.0,
                currency="EUR",
            )
            join_in = [
                (s.topic_decisions, dec_rec.key, dec_rec.value, 0),
                (s.topic_decisions, b"tx-k", encode_decision(flagged), 1),
                *((s.topic_scores, rec.key, rec.value, 0) for rec in r.out.on(s.topic_scores)),
            ]
            evs = [await deliver(r.join, t, v, k, p) for t, k, v, p in join_in]
            await settle(r.join, evs)
            assert r.out.on(s.topic_outcomes) == []  # nothing to say without a label
            assert dict(r.fa.metrics_table.items()) == {}

            async def label(tid: str, is_fraud: bool, partition: int) -> None:
                ev = await deliver(
                    r.join, s.topic_feedback, label_bytes(tid, is_fraud), tid.encode(), partition
                )
                await settle(r.join, [ev])

            def outcomes_since(n: int) -> dict[tuple[str, str, str], Any]:
                new = _outcomes(r, s.topic_outcomes)[n:]
                by_key = {(o.transaction_id, o.model_version, o.variant): o for o in new}
                assert len(by_key) == len(new)
                return by_key

            dv = (d.model_version, d.variant)
            sv = [(sc.model_version, "shadow") for sc in shadow]

            # First labels: one outcome per version that scored the transaction.
            await label("tx-j", True, 0)
            await label("tx-k", False, 1)
            got = outcomes_since(0)
            assert set(got) == {
                ("tx-j", *dv),
                *(("tx-j", *v) for v in sv),
                ("tx-k", CHAMPION, "champion"),
            }
            o_j = got[("tx-j", *dv)]
            assert o_j.outcome == classify(d.decision, True)
            assert o_j.outcome == ("FN" if d.decision == "approve" else "TP")
            assert (o_j.decision, o_j.score, o_j.is_fraud, o_j.amount) == (
                d.decision,
                d.score,
                True,
                d.amount,
            )
            for sc in shadow:
                o_s = got[("tx-j", sc.model_version, "shadow")]
                assert (o_s.outcome, o_s.score) == (classify(sc.decision, True), sc.score)
            o_k = got[("tx-k", CHAMPION, "champion")]
            assert (o_k.outcome, o_k.amount, o_k.is_fraud) == ("FP", 310.0, False)
            # FP and FN outcomes are copied to their own topics.
            for topic, kind in ((s.topic_false_positives, "FP"), (s.topic_false_negatives, "FN")):
                assert sorted(
                    (o.transaction_id, o.model_version, o.variant) for o in _outcomes(r, topic)
                ) == sorted(key for key, o in got.items() if o.outcome == kind)
            assert r.confusion(0, *dv) == _cell(o_j.outcome, d.amount)
            for sc in shadow:
                assert r.confusion(0, sc.model_version, "shadow") == _cell(
                    classify(sc.decision, True), d.amount
                )
            assert r.confusion(1, CHAMPION, "champion") == _cell("FP", 310.0)

            # Reversals: each emits the new outcome, and its metrics row moves one count.
            n = len(r.out.on(s.topic_outcomes))
            await label("tx-j", False, 0)
            await label("tx-k", True, 1)
            got2 = outcomes_since(n)
            assert set(got2) == set(got)
            new_j = got2[("tx-j", *dv)]
            assert (new_j.outcome, new_j.is_fraud) == (classify(d.decision, False), False)
            assert new_j.outcome == ("TN" if d.decision == "approve" else "FP")
            assert got2[("tx-k", CHAMPION, "champion")].outcome == "TP"
            assert r.confusion(0, *dv) == _cell(new_j.outcome, d.amount)
            for sc in shadow:
                assert got2[("tx-j", sc.model_version, "shadow")].outcome == classify(
                    sc.decision, False
                )
                assert r.confusion(0, sc.model_version, "shadow") == _cell(
                    classify(sc.decision, False), d.amount
                )
            assert r.confusion(1, CHAMPION, "champion") == _cell("TP", 310.0)
            fps = [o.transaction_id for o in _outcomes(r, s.topic_false_positives)]
            assert fps.count("tx-k") == 1  # the TP that replaced it is not a false positive

            # The same label again changes nothing.
            n = len(r.out.on(s.topic_outcomes))
            await label("tx-k", True, 1)
            assert len(r.out.on(s.topic_outcomes)) == n
            assert r.confusion(1, CHAMPION, "champion") == _cell("TP", 310.0)
            assert r.out.on(s.topic_feedback_dlq) == []

    run(body)


def test_label_without_decision_is_held_then_dead_lettered(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            s = r.s
            raw = label_bytes("tx-ghost", True)
            ev = await deliver(r.join, s.topic_feedback, raw, b"tx-ghost")
            await settle(r.join, [ev])
            assert r.out.on(s.topic_outcomes) == []
            assert r.out.on(s.topic_feedback_dlq) == []
            assert set(r.fa.join_handler.held) == {b"tx-ghost"}
            held = orjson.loads(r.fa.join_table.get(b"tx-ghost"))
            assert held["d"] is None
            assert held["l"][0] is True

            # Not yet past a real grace period...
            assert r.fa.join_handler.sweep(s.feedback_grace_seconds) == 0
            before = counter("fraudstream_feedback_unknown_total")
            # ...past a zero one: dead-lettered with the original bytes.
            assert r.fa.join_handler.sweep(0) == 1
            [dl] = r.out.on(s.topic_feedback_dlq)
            assert dl.value == raw
            assert dl.key == b"tx-ghost"
            assert dl.headers["error.class"] == "unknown_transaction"
            assert "no decision" in dl.headers["error.message"]
            assert dl.headers["origin.topic"] == s.topic_feedback
            assert dl.headers["origin.partition"] == str(ev.message.partition)
            assert dl.headers["origin.offset"] == str(ev.message.offset)
            assert counter("fraudstream_feedback_unknown_total") - before == 1
            assert r.fa.join_handler.held == {}
            assert r.fa.join_table.get(b"tx-ghost") is None
            assert r.fa.join_handler.sweep(0) == 0

    run(body)


def test_label_before_its_decision_is_counted_when_the_decision_arrives(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            s = r.s
            ev = await deliver(r.join, s.topic_feedback, label_bytes("tx-late", False), b"tx-late")
            await settle(r.join, [ev])
            assert b"tx-late" in r.fa.join_handler.held
            late = Decision(
                transaction_id="tx-late",
                card_id="card-l",
                decision="review",
                score=0.8,
                model_version=CHAMPION,
                variant="champion",
                reasons=(),
                decided_at="2024-05-01T12:00:00.000+00:00",
                amount=55.0,
                currency="EUR",
            )
            ev = await deliver(r.join, s.topic_decisions, encode_decision(late), b"tx-late")
            await settle(r.join, [ev])
            [o] = _outcomes(r, s.topic_outcomes)
            assert (o.transaction_id, o.outcome, o.decision) == ("tx-late", "FP", "review")
            assert [x.transaction_id for x in _outcomes(r, s.topic_false_positives)] == ["tx-late"]
            assert r.confusion(0, CHAMPION, "champion").fp == 1
            assert r.fa.join_handler.held == {}
            assert r.fa.join_handler.sweep(0) == 0  # nothing left to dead-letter
            assert r.out.on(s.topic_feedback_dlq) == []

    run(body)


def test_feedback_in_a_partition_its_id_does_not_hash_to_is_dead_lettered(
    tmp_path: Path,
) -> None:
    """The join can only find a decision in the partition its transaction_id hashes to; a label
    published with another partitioner is refused loudly instead of corrupting the counts."""

    async def body() -> None:
        async with rig(tmp_path) as r:
            s = r.s
            key = b"tx-p"
            right = (murmur2(key) & 0x7FFFFFFF) % 2
            ev = await deliver(r.join, s.topic_feedback, label_bytes("tx-p", True), key, 1 - right)
            await settle(r.join, [ev])
            dead = r.out.on(s.topic_feedback_dlq)
            assert len(dead) == 1
            assert dead[0].headers["error.class"] == "wrong_partition"
            assert "murmur2" in dead[0].headers["error.message"]
            assert _outcomes(r, s.topic_outcomes) == []

    run(body)
