"""`fraudstream broker` keeps its data across stop/start (same ports and cluster id); `--fresh`
formats new storage; a worker started on the fresh cluster with the old cluster's local tables
decides (the issue's reset sequence, through the CLI and real processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from fraudstream.core.messages import encode_transaction
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.broker import LocalBroker
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.kafka.jvm import free_port
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import REPO, Worker, fresh_settings, wait_for

pytestmark = pytest.mark.integration


def cluster_id(bootstrap: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return str(admin.describe_cluster(request_timeout=10).result(10).cluster_id)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def decide_some(s: Settings, worker: Worker, seed: int) -> set[str]:
    worker.wait_ready()
    txs = [ev.tx for ev in generate(SimConfig(seed=seed), n=30)]
    p = make_producer(s)
    for tx in txs:
        p.produce(s.topic_transactions, key=tx.card_id.encode(), value=encode_transaction(tx))
    assert p.flush(30) == 0
    ids = {tx.transaction_id for tx in txs}
    decided = {m.key().decode() for m in wait_for(s, [s.topic_decisions], len(txs))}
    assert decided >= ids, worker.log_tail()
    return ids


def test_stop_start_keeps_the_data_fresh_resets_and_a_worker_decides_after(
    tmp_path: Path,
) -> None:
    """One scenario (a broker start costs ~15 s here): start, topics, a worker deciding, stop
    both; start again: same port and cluster, decisions still there; a taken stored port is
    named with what to do; start --fresh: empty cluster; topics, a worker with the old local
    tables decides."""
    home, port = tmp_path / "broker", str(free_port())
    data = tmp_path / "worker-data"  # one local state folder for both workers
    started = cli("broker", "start", "--home", str(home), "--port", port, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        bootstrap = started.stdout.strip()
        first_cluster = cluster_id(bootstrap)
        s = fresh_settings(bootstrap, app_id=f"reset-{uuid.uuid4().hex[:6]}")
        create_topics(s)
        w = Worker(s, "before", tmp_path)
        w.env["FRAUD_DATA_DIR"] = str(data)
        w.start()
        try:
            ids = decide_some(s, w, seed=1)
        finally:
            assert w.stop() == 0
        assert cli("broker", "stop", "--home", str(home), cwd=tmp_path).returncode == 0

        resumed = cli("broker", "start", "--home", str(home), cwd=tmp_path)  # no --port
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed on its stored data" in resumed.stderr
        assert resumed.stdout.strip() == bootstrap
        assert cluster_id(bootstrap) == first_cluster
        assert {m.key().decode() for m in read_all(s, [s.topic_decisions])} >= ids
        assert cli("broker", "stop", "--home", str(home), cwd=tmp_path).returncode == 0
        status = cli("broker", "status", "--home", str(home), cwd=tmp_path)
        assert status.returncode == 1
        assert "data kept" in status.stdout

        controller = LocalBroker(home).stored()
        assert controller is not None
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", controller.controller_port))
            squatter.listen()
            taken = cli("broker", "start", "--home", str(home), cwd=tmp_path)
        assert taken.returncode == 2
        assert f"Port {controller.controller_port}" in taken.stderr
        assert "--fresh" in taken.stderr

        fresh = cli("broker", "start", "--home", str(home), "--port", port, "--fresh", cwd=tmp_path)
        assert fresh.returncode == 0, fresh.stderr
        assert "new storage" in fresh.stderr
        assert fresh.stdout.strip() == bootstrap
        assert cluster_id(bootstrap) != first_cluster
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert s.topic_decisions not in topics

        create_topics(s)
        w2 = Worker(s, "after", tmp_path)
        w2.env["FRAUD_DATA_DIR"] = str(data)
        w2.start()
        try:
            decide_some(s, w2, seed=2)
            assert "ConsistencyError" not in w2.log_path.read_text(errors="replace")
        finally:
            assert w2.stop() == 0
    finally:
        cli("broker", "stop", "--home", str(home), cwd=tmp_path)
