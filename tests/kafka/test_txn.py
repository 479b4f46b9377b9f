"""How a transactional producer's errors are read: fenced by a newer owner (the worker must stop
writing for the partition), broken (replace the producer), abortable (decide again), or the
broker being away. The Kafka side is in tests/integration/test_exactly_once.py and the broker
fault scenario."""

from __future__ import annotations

import asyncio
import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from fraudstream.errors import BrokerError, Fenced, TransactionAborted, WorkerFrozen
from fraudstream.kafka import lanes, txn
from fraudstream.kafka.txn import TransactionalWriters
from fraudstream.settings import Settings


def classify(code: int, **flags: bool) -> BrokerError:
    return txn._classify(KafkaException(KafkaError(code, "x", **flags)), "aborting", 3)  # noqa: SLF001


@pytest.mark.parametrize(
    "code",
    [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH],  # noqa: SLF001
)
def test_fenced_is_fenced(code: int) -> None:
    got = classify(code, fatal=True)
    assert type(got) is Fenced
    assert "Another worker now owns this partition" in str(got)


def test_a_fatal_error_that_is_not_fencing_asks_for_a_new_producer() -> None:
    # Seen after the broker was killed and restarted mid-commit: the abort answered
    # INVALID_TXN_STATE. Taking that for a newer owner stopped a worker nobody had replaced.
    got = classify(KafkaError.INVALID_TXN_STATE, fatal=True)
    assert not isinstance(got, Fenced)
    assert isinstance(got, BrokerError)
    assert "replaced" in str(got)


def test_abortable_and_transient_errors() -> None:
    assert type(classify(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, txn_requires_abort=True)) is (
        TransactionAborted
    )
    assert type(classify(KafkaError._TRANSPORT, retriable=True)) is BrokerError  # noqa: SLF001


def test_a_frozen_worker_fences_nobody() -> None:
    # Seen in the SIGSTOP scenario: the frozen worker woke up, its commit had failed meanwhile,
    # and replacing the producer (init_transactions) fenced the partition's new owner, which
    # then stopped as if it were the zombie. The pause fence is asked first.
    def frozen() -> None:
        raise WorkerFrozen("test: frozen for 18s")

    writers = TransactionalWriters(Settings(kafka_bootstrap="127.0.0.1:1"), None, fence=frozen)
    try:
        with pytest.raises(WorkerFrozen):
            asyncio.run(writers.open(0))
    finally:
        writers.close_all()


def test_a_stuck_call_replaces_the_producer_and_the_next_call_gets_a_thread_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka's transactional calls were seen to block past their timeouts after the
    broker died mid-call: the call is left on its thread, the producer replaced, and the
    partition's next calls must not queue behind it."""
    monkeypatch.setattr(lanes, "STUCK_S", 0.2)
    writers = TransactionalWriters(Settings(kafka_bootstrap="127.0.0.1:1"), None)
    replaced: list[int] = []

    async def replace(partition: int) -> None:
        replaced.append(partition)

    monkeypatch.setattr(writers, "_replace", replace)
    release = threading.Event()
    threads: list[str] = []

    def note() -> None:
        threads.append(threading.current_thread().name)

    def stuck() -> None:
        note()
        release.wait(10)

    async def body() -> None:
        await writers._run_bounded(3, note)  # noqa: SLF001
        await writers._run_bounded(3, note)  # noqa: SLF001 - the same thread again
        with pytest.raises(lanes.Stuck):
            await writers._run_bounded(3, stuck)  # noqa: SLF001
        assert replaced == [3]
        await asyncio.wait_for(writers._run_bounded(3, note), 5)  # noqa: SLF001 - not behind it

    try:
        asyncio.run(body())
        threads_now = [t for t in threading.enumerate() if t.name == "fraudstream-txn-3"]
        assert len(threads_now) == 2  # the stuck call's, retired, and the partition's new one
        release.set()  # the stuck call returns (after its loop closed) and its thread ends
        writers.close_all()
        for t in threads_now:
            t.join(5)
            assert not t.is_alive()
    finally:
        release.set()
        writers.close_all()
    assert threads == ["fraudstream-txn-3"] * 4
