"""The local broker's ``server.properties``: a single KRaft node on loopback whose replication
settings let transactions work, and the optional SASL_SSL listener."""

from __future__ import annotations

from pathlib import Path

SASL_USER = "fraudstream"
SECURE_MECHANISMS = ("PLAIN", "SCRAM-SHA-512")


def _props_value(text: str) -> str:
    """``text`` as one java.util.Properties value (newlines as \\n escapes)."""
    return text.strip().replace("\\", "\\\\").replace("\n", "\\n")


def secure_properties(
    tls_dir: Path, users: dict[str, str], listener: str = "sasl_ssl"
) -> list[str]:
    cert_chain = (tls_dir / "broker.crt").read_text() + (tls_dir / "ca.crt").read_text()
    key = (tls_dir / "broker.key").read_text()
    plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in users.items())
    pfx = f"listener.name.{listener}"
    return [
        f"sasl.enabled.mechanisms={','.join(SECURE_MECHANISMS)}",
        f"{pfx}.sasl.enabled.mechanisms={','.join(SECURE_MECHANISMS)}",
        f"{pfx}.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        f"{pfx}.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{pfx}.ssl.keystore.type=PEM",
        f"{pfx}.ssl.keystore.certificate.chain={_props_value(cert_chain)}",
        f"{pfx}.ssl.keystore.key={_props_value(key)}",
        f"{pfx}.ssl.client.auth=none",
    ]


def server_properties(
    host: str,
    port: int,
    controller_port: int,
    log_dirs: Path,
    secure_port: int | None = None,
    secure_lines: list[str] | None = None,
) -> str:
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}"
    advertised = f"PLAINTEXT://{host}:{port}"
    proto_map = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if secure_port is not None:
        listeners += f",SASL_SSL://{host}:{secure_port}"
        advertised += f",SASL_SSL://{host}:{secure_port}"
        proto_map += ",SASL_SSL:SASL_SSL"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={host}:{controller_port}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={proto_map}",
            "inter.broker.listener.name=PLAINTEXT",
            *(secure_lines or []),
            f"log.dirs={log_dirs}",
            "num.partitions=1",
            # Single node: internal topics cannot have more replicas than brokers.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=8",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Topics are created deliberately by `fraudstream topics create` and Faust.
            "auto.create.topics.enable=false",
            "message.max.bytes=2097152",
            "log.segment.bytes=104857600",
            "log.retention.check.interval.ms=60000",
            "",
        ]
    )
