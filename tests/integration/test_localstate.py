"""Reset-safe local state: a worker whose local tables belong to a cluster that was reset (topics
deleted and created again, as a freshly formatted development broker has them) discards them,
says so once, and decides again — instead of Faust's ConsistencyError at start (real broker)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from fraudstream.app.localstate import STAMP, state_dir
from fraudstream.core.messages import Feedback, encode_feedback, encode_transaction
from fraudstream.errors import BrokerError
from fraudstream.kafka.admin import create_topics, topic_specs
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import Worker, fresh_settings, wait_for

pytestmark = pytest.mark.integration


def _publish(s: Settings, n: int, seed: int) -> list[str]:
    """``n`` transactions and a label for each (so the join's tables get changelog offsets)."""
    txs = [ev.tx for ev in generate(SimConfig(seed=seed), n=n)]
    p = make_producer(s)
    for tx in txs:
        p.produce(s.topic_transactions, key=tx.card_id.encode(), value=encode_transaction(tx))
    for tx in txs:
        fb = Feedback(tx.transaction_id, False, "chargeback", "2026-01-01T00:00:00Z")
        p.produce(s.topic_feedback, key=tx.transaction_id.encode(), value=encode_feedback(fb))
    assert p.flush(30) == 0
    return [tx.transaction_id for tx in txs]


def _recreate_topics(s: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    names = [spec.name for spec in topic_specs(s)]
    for fut in admin.delete_topics(names, operation_timeout=30).values():
        fut.result()
    deadline = time.monotonic() + 60
    while set(names) & set(admin.list_topics(timeout=10).topics):  # deletion is asynchronous
        assert time.monotonic() < deadline, "the broker did not delete the topics in 60 s"
        time.sleep(0.5)
    # A loaded broker may still list a topic as "marked for deletion", or not list a new one
    # yet: create what is missing until every name is back.
    while not set(names) <= set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "the broker did not recreate the topics in 60 s"
        with contextlib.suppress(BrokerError):
            create_topics(s)
        time.sleep(0.5)


@pytest.mark.parametrize("stamped", [True, False], ids=["stamp-differs", "offsets-ahead"])
def test_worker_rebuilds_local_tables_of_a_reset_cluster(
    kafka_bootstrap: str, tmp_path: Path, stamped: bool
) -> None:
    s = fresh_settings(kafka_bootstrap, feedback_grace_seconds=600.0)
    create_topics(s)
    w = Worker(s, "first", tmp_path).start()
    try:
        w.wait_ready()
        _publish(s, 60, seed=1)
        assert len(wait_for(s, [s.topic_outcomes], 60)) >= 60
    finally:
        assert w.stop() == 0
    data = Path(w.env["FRAUD_DATA_DIR"])
    folder = data / s.app_id
    assert (folder / STAMP).exists()
    assert any(folder.rglob("*.db")), "the join's tables were never written locally"

    _recreate_topics(s)
    if not stamped:  # a folder from before stamps existed: only its offsets tell
        (folder / STAMP).unlink()

    again = Worker(s, "second", tmp_path)
    again.env = {**again.env, "FRAUD_DATA_DIR": str(data)}  # the first worker's local tables
    again.start()
    try:
        again.wait_ready()
        ids = _publish(s, 20, seed=2)
        decided = wait_for(s, [s.topic_decisions], 20)
        assert {m.key().decode() for m in decided} >= set(ids)
        log = again.log_path.read_text(errors="replace")
        assert log.count("do not belong to this Kafka cluster") == 1, again.log_tail()
        assert "ConsistencyError" not in log
    finally:
        assert again.stop() == 0
    assert state_dir(s.model_copy(update={"data_dir": data})) == folder
