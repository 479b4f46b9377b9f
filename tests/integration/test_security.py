"""SASL (PLAIN and SCRAM-SHA-512) over TLS with a generated CA: the right credentials work for the
confluent-kafka tools and for a real worker process; a wrong password is refused (issue: operate it,
secure connections)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError

from fraudstream.core.messages import encode_transaction
from fraudstream.errors import BrokerError
from fraudstream.kafka.admin import create_topics, describe_topics
from fraudstream.kafka.clients import make_consumer, make_producer, read_all
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import REPO, Worker, settings_env, wait_for
from tests.integration.secure import SecureBroker, secure_broker  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def _send(s: Settings, n: int, seed: int) -> list[str]:
    txs = [e.tx for e in generate(SimConfig(seed=seed, n_cards=50), n=n)]
    p = make_producer(s)
    for tx in txs:
        p.produce(s.topic_transactions, key=tx.card_id.encode(), value=encode_transaction(tx))
    assert p.flush(30) == 0
    return [t.transaction_id for t in txs]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_right_credentials_work_for_tools_and_a_worker(
    secure_broker: SecureBroker,  # noqa: F811
    mechanism: str,
    tmp_path: Path,
) -> None:
    s = secure_broker.settings(mechanism)
    assert s.kafka_client_config()["security.protocol"] == "SASL_SSL"
    # confluent-kafka: admin, producer, consumer.
    assert s.topic_transactions in create_topics(s)
    have = {name: n for name, n, _ in describe_topics(s)}
    assert have[s.topic_transactions] == 2
    sent = _send(s, 20, seed=1)
    got = [orjson.loads(m.value())["transaction_id"] for m in read_all(s, [s.topic_transactions])]
    assert sorted(got) == sorted(sent)

    # A real worker (Faust + aiokafka over SASL_SSL, and its confluent clients) decides them.
    w = Worker(s, f"worker-{mechanism}", tmp_path).start()
    try:
        w.wait_ready(timeout=120)
        more = _send(s, 10, seed=2)
        decisions = wait_for(s, [s.topic_decisions], len(sent) + len(more), timeout=90)
        decided = {orjson.loads(m.value())["transaction_id"] for m in decisions}
        assert decided == set(sent) | set(more)
    finally:
        w.stop()
    log = w.log_path.read_text(errors="replace")
    assert secure_broker.password not in log


def test_a_wrong_password_is_refused(
    secure_broker: SecureBroker,  # noqa: F811
    tmp_path: Path,
) -> None:
    good = secure_broker.settings("SCRAM-SHA-512")
    create_topics(good)
    sent = _send(good, 5, seed=3)
    wrong_pw = "not-the-password-" + uuid.uuid4().hex[:6]
    for mechanism in ("PLAIN", "SCRAM-SHA-512"):
        bad = secure_broker.settings(mechanism, password=wrong_pw, uid=good.app_id[3:])
        # Tools: a clear error, nothing read.
        with pytest.raises(BrokerError, match="FRAUD_KAFKA_BOOTSTRAP"):
            describe_topics(bad)
        errors: list[KafkaError] = []
        consumer = make_consumer(
            bad, group_id=f"wrong-{uuid.uuid4().hex[:6]}", error_cb=errors.append
        )
        consumer.subscribe([bad.topic_transactions])
        consumed = []
        deadline = time.monotonic() + 10
        refused_at: float | None = None  # then a second more: nothing may arrive after it
        try:
            while time.monotonic() < min(deadline, (refused_at or deadline) + 1.0):
                msg = consumer.poll(0.25)
                if msg is not None and not msg.error():
                    consumed.append(msg)
                if refused_at is None and any(
                    e.code() == KafkaError._AUTHENTICATION  # noqa: SLF001
                    for e in errors
                ):
                    refused_at = time.monotonic()
        finally:
            consumer.close()
        assert consumed == []
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors  # noqa: SLF001
        assert any("Authentication failed" in e.str() for e in errors), errors

    # A worker with the wrong password stops with an error instead of running blind.
    bad = secure_broker.settings("SCRAM-SHA-512", password=wrong_pw, uid=good.app_id[3:])
    w = Worker(bad, "worker-wrong-password", tmp_path).start()
    assert w.proc is not None
    try:
        rc = w.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        w.stop()
        pytest.fail(f"a worker with a wrong password kept running:\n{w.log_tail()}")
    log = w.log_path.read_text(errors="replace")
    assert rc != 0
    assert "Authentication failed" in log, log[-3000:]
    assert wrong_pw not in log
    assert secure_broker.password not in log
    # Nothing was decided (the right credentials see an empty decisions topic).
    assert read_all(good, [good.topic_decisions], timeout=10) == []
    assert len(sent) == 5

    # The CLI says so in one line naming the setting, exit 2.
    out = subprocess.run(
        [sys.executable, "-m", "fraudstream", "topics", "describe"],
        env=settings_env(bad),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "error:" in out.stderr
    assert "FRAUD_KAFKA_BOOTSTRAP" in out.stderr
    assert "Traceback" not in out.stderr
    assert wrong_pw not in out.stderr + out.stdout
