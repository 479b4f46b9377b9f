"""PII-safe logs: a real worker at DEBUG level, fed card numbers in bad input, with a SASL password
set, writes no Luhn-valid 13–19 digit number and no password anywhere in its output (issue:
operate it, logs). Runs against a secure broker of its own, so the password is really in use."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import orjson
import pytest

from fraudstream.core.messages import encode_transaction
from fraudstream.core.redact import find_card_numbers
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import Worker, wait_for
from tests.integration.secure import SecureBroker, secure_broker  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

PANS = ["4111111111111111", "5555555555554444", "4012888888881881", "378282246310005"]


def _payloads(s: Settings) -> tuple[list[tuple[bytes | None, bytes]], int, int]:
    """(key, value) records: good ones, and bad ones whose raw bytes carry card numbers."""
    txs = [e.tx for e in generate(SimConfig(seed=7, n_cards=40), n=60)]
    good = [(t.card_id.encode(), encode_transaction(t)) for t in txs]
    base = orjson.loads(encode_transaction(txs[0]))

    def tx(**change: object) -> bytes:
        return orjson.dumps({**base, "transaction_id": f"pan-{uuid.uuid4().hex[:8]}", **change})

    grouped = "-".join(PANS[2][i : i + 4] for i in range(0, 16, 4))
    bad: list[tuple[bytes | None, bytes]] = [
        # A card number where the card token belongs (also as the key).
        (PANS[0].encode(), tx(card_id=PANS[0])),
        (b"card-x", tx(card_id=PANS[0])),
        # Card numbers inside other fields, grouped and not.
        (b"card-y", tx(merchant_id=f"shop {grouped}", amount="12.50")),
        (b"card-z", tx(device_id=PANS[1], currency="XYZ")),
        (b"card-z", tx(device_id=f"dev {PANS[3]}", event_time=f"{PANS[3]}")),
        # Not JSON at all, with a card number in the bytes.
        (b"card-w", f"{{oops card={PANS[1]} amount=1".encode()),
        (PANS[2].encode(), f"[{PANS[2]}]".encode()),
    ]
    # The valid-looking records with a card number in a free-text field are decided or
    # dead-lettered; either way they must not be logged raw.
    return good + bad, len(good), len(bad)


def _run(secure: SecureBroker, tmp_path: Path, *, as_json: bool) -> str:
    s = secure.settings("SCRAM-SHA-512", log_level="DEBUG", log_json=as_json)
    create_topics(s)
    w = Worker(s, f"worker-debug-{'json' if as_json else 'text'}", tmp_path).start()
    try:
        w.wait_ready(timeout=120)
        records, n_good, n_bad = _payloads(s)
        p = make_producer(s)
        for key, value in records:
            p.produce(s.topic_transactions, key=key, value=value)
        assert p.flush(30) == 0
        # Every record ends up decided or dead-lettered.
        done = wait_for(s, [s.topic_decisions, s.topic_dlq], n_good + n_bad, timeout=120)
        assert len(done) >= n_good + n_bad
        assert sum(m.topic() == s.topic_dlq for m in done) >= 5
    finally:
        w.stop()
    return w.log_path.read_text(errors="replace")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_debug_logs_hold_no_card_number_and_no_password(
    secure_broker: SecureBroker,  # noqa: F811
    tmp_path: Path,
    as_json: bool,
) -> None:
    out = _run(secure_broker, tmp_path, as_json=as_json)
    assert len(out.splitlines()) > 50, "DEBUG logging did not come through"
    assert "DEBUG" in out or '"level": "debug"' in out
    leaked = find_card_numbers(out)
    assert leaked == [], f"card numbers in the log: {sorted(set(leaked))}"
    assert secure_broker.password not in out
    if as_json:
        for line in out.splitlines():
            if line.strip():
                body = json.loads(line)  # every line is one JSON object
                assert isinstance(body, dict)
                assert {"ts", "level", "logger", "msg"} <= set(body)
