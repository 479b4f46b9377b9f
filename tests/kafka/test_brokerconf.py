"""The local broker's server.properties: a single node whose internal topics can exist (one
replica) so that transactions work; the secure listener only when asked for."""

from __future__ import annotations

from pathlib import Path

from fraudstream.kafka.brokerconf import SECURE_MECHANISMS, secure_properties, server_properties


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and "=" in line)


def test_a_single_node_can_run_transactions() -> None:
    props = _props(server_properties("127.0.0.1", 9092, 9093, Path("/data")))
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["auto.create.topics.enable"] == "false"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["log.dirs"] == "/data"
    assert "SASL_SSL" not in props["listener.security.protocol.map"]


def test_the_secure_listener_carries_pem_material_as_one_property_each(tmp_path: Path) -> None:
    (tmp_path / "broker.crt").write_text("-----CERT-----\nabc\n")
    (tmp_path / "ca.crt").write_text("-----CA-----\ndef\n")
    (tmp_path / "broker.key").write_text("-----KEY-----\nghi\n")
    lines = secure_properties(tmp_path, {"fraudstream": "pw"})
    text = server_properties(
        "127.0.0.1", 9092, 9093, tmp_path, secure_port=9094, secure_lines=lines
    )
    props = _props(text)
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:9094")
    assert props["sasl.enabled.mechanisms"] == ",".join(SECURE_MECHANISMS)
    # PEM newlines are escaped: each value stays on its one line.
    chain = props["listener.name.sasl_ssl.ssl.keystore.certificate.chain"]
    assert "\\n" in chain
    assert "abc" in chain
    assert "def" in chain
    assert 'user_fraudstream="pw"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
