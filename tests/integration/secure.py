"""A broker of its own with a SASL_SSL listener (generated CA, PLAIN + SCRAM-SHA-512), for the
security and logging tests, and Settings that talk to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fraudstream.errors import BrokerError
from fraudstream.kafka.broker import BrokerInfo, LocalBroker
from fraudstream.settings import Settings
from tests.brokers import start_on_free_ports

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SecureBroker:
    info: BrokerInfo
    username: str
    password: str

    def settings(
        self,
        mechanism: str = "SCRAM-SHA-512",
        password: str | None = None,
        uid: str | None = None,
        **overrides: object,
    ) -> Settings:
        """Settings for the SASL_SSL listener, with topic names and app id unique to ``uid``."""
        uid = uid or uuid.uuid4().hex[:8]
        base = Settings(_env_file=None)  # type: ignore[call-arg]
        topics = {f"topic_{k}": f"{v}.{uid}" for k, v in base.topic_names().items()}
        values: dict[str, object] = {
            "kafka_bootstrap": self.info.secure_bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": self.username,
            "kafka_sasl_password": self.password if password is None else password,
            "kafka_ssl_cafile": self.info.ca_file,
            "app_id": f"fs-{uid}",
            "models_dir": REPO / "models",
            "partitions": 2,
            **topics,
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def start_secure_broker(home: Path) -> tuple[LocalBroker, SecureBroker]:
    broker = LocalBroker(home, secure=True)
    try:
        info = start_on_free_ports(broker)
    except BrokerError as exc:
        pytest.fail(f"No secure Kafka broker for the test: {exc}", pytrace=False)
    creds = broker.sasl_credentials()
    assert creds is not None
    assert info.secure_bootstrap is not None
    assert info.ca_file
    return broker, SecureBroker(info, creds[0], creds[1])


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker, sb = start_secure_broker(tmp_path_factory.mktemp("secure-broker"))
    try:
        yield sb
    finally:
        broker.stop()
