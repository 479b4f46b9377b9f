"""How a transactional producer's errors are read: fenced by a newer owner (the worker must stop
writing for the partition), broken (replace the producer), abortable (decide again), or the
broker being away. The Kafka side is in tests/integration/test_exactly_once.py and the broker
fault scenario."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError, KafkaException

from fraudstream.errors import BrokerError, Fenced, TransactionAborted, WorkerFrozen
from fraudstream.kafka import txn
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
