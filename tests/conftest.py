"""Shared fixtures: one real Kafka broker per test session, fresh topic names per test.

Broker, in this order: FRAUD_KAFKA_BOOTSTRAP set → that cluster; a Docker engine that answers
`docker info` → a testcontainers Kafka; otherwise → the project's own launcher
(`fraudstream broker`).
On CI an integration test never skips for want of a broker: the session fails and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fraudstream.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own choice of scheduler
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` (``-n 2 --dist loadgroup``): the groups of tests/xdist_groups.py."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.xdist_groups import PathGroups

    return PathGroups(config, log)


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], check=False, capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("FRAUD_KAFKA_BOOTSTRAP"):
        yield os.environ["FRAUD_KAFKA_BOOTSTRAP"]
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from fraudstream.errors import BrokerError
    from fraudstream.kafka.broker import LocalBroker
    from tests.brokers import start_on_free_ports

    # Under pytest-xdist each worker process has a session, so a broker, of its own: its
    # folder is under the worker's own basetemp, its ports are the OS's free ones.
    broker = LocalBroker(tmp_path_factory.mktemp("broker"))
    try:
        info = start_on_free_ports(broker)
    except BrokerError as exc:
        pytest.fail(f"No Kafka broker for the integration tests: {exc}", pytrace=False)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def broker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with topic names and app id unique to this test."""
    uid = uuid.uuid4().hex[:8]
    topics = {
        f"topic_{k}": f"{v}.{uid}"
        for k, v in Settings(_env_file=None).topic_names().items()  # type: ignore[call-arg]
    }
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap=kafka_bootstrap,
        app_id=f"fs-{uid}",
        data_dir=tmp_path / "worker",
        models_dir=REPO / "models",
        partitions=2,
        **topics,
    )
