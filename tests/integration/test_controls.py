"""The fraud team's controls on a running worker (issue 21): `policy set` and `rules set` through
the real CLI change its decisions within 10 s without a restart; decisions record the policy and
rules versions they were made under; a blocked card is declined with the rule named."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from fraudstream.core.messages import Decision, decode_decision
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from tests.integration.procs import Worker, run_cli, wait_for

pytestmark = pytest.mark.integration

LIVE_WITHIN_S = 10.0


class Traffic:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.producer = make_producer(s)
        self.sent = 0
        self.values: list[bytes] = []

    def send(self, card: str, amount: float = 12.5) -> str:
        self.sent += 1
        tid = f"tx-{self.sent:04d}"
        value = orjson.dumps(
            {
                "transaction_id": tid,
                "card_id": card,
                "merchant_id": "m-1",
                "amount": amount,
                "currency": "EUR",
                "event_time": f"2026-11-29T09:{self.sent // 60:02d}:{self.sent % 60:02d}+00:00",
                "mcc": 5411,
                "country": "FR",
                "channel": "pos",
                "device_id": "dev-1",
                "schema_version": 1,
            }
        )
        self.values.append(value)
        self.producer.produce(self.s.topic_transactions, key=card.encode(), value=value)
        assert self.producer.flush(30) == 0
        return tid

    def decisions(self, timeout: float = 60.0) -> dict[str, Decision]:
        msgs = wait_for(self.s, [self.s.topic_decisions], self.sent, timeout=timeout)
        return {m.key().decode(): decode_decision(m.value()) for m in msgs if m.value()}


def _until_live(traffic: Traffic, card: str, done: object) -> tuple[Decision, float]:
    """Send a probe for ``card`` every half second until its decision satisfies ``done``;
    the decision and how long it took."""
    t0 = time.monotonic()
    while True:
        tid = traffic.send(card)
        d = traffic.decisions(timeout=LIVE_WITHIN_S)[tid]
        if done(d):  # type: ignore[operator]
            return d, time.monotonic() - t0
        assert time.monotonic() - t0 < LIVE_WITHIN_S, f"not live after {LIVE_WITHIN_S}s: {d}"
        time.sleep(0.5)


def test_policy_and_rules_change_a_running_workers_decisions_live(
    broker_settings: Settings, tmp_path: Path
) -> None:
    s = broker_settings
    create_topics(s)
    w = Worker(s, "worker-controls", tmp_path).start()
    try:
        w.wait_ready()
        pid = w.proc.pid if w.proc else None
        traffic = Traffic(s)
        first = traffic.send("card-stolen")
        before = traffic.decisions()[first]
        assert (before.decision, before.policy_version, before.rules_version) == ("approve", 0, 0)

        run_cli(s, "rules", "list-add", "stolen", "--field", "card", "card-stolen", "--note", "it")
        shown = run_cli(s, "rules", "show", "--json")
        assert "card-stolen" not in shown  # stored and shown as a digest only
        blocked, took_rules = _until_live(traffic, "card-stolen", lambda d: d.rules_version == 1)
        assert blocked.decision == "decline"
        assert (blocked.reason_codes[0].code, blocked.reason_codes[0].ref) == (
            "RULE_BLOCK_CARD",
            "stolen",
        )
        assert "card-stolen" not in blocked.reason_codes[0].text

        # Review everything the models score above 0: the policy, not a new model version.
        run_cli(s, "policy", "set", "--model", "*", "--review", "0", "--decline", "1")
        flagged, took_policy = _until_live(traffic, "card-ok", lambda d: d.policy_version == 1)
        assert flagged.decision == "review"
        assert flagged.rules_version == 1
        assert flagged.reason_codes  # the model's reasons, in words
        assert all(c.source == "model" for c in flagged.reason_codes)
        assert max(took_rules, took_policy) < LIVE_WITHIN_S

        history = run_cli(s, "policy", "history")
        assert "policy version 1" in history
        # The versions a decision records are enough to make it again, in process.
        src = tmp_path / "sent.jsonl"
        src.write_bytes(b"\n".join(traffic.values))
        for live in (flagged, blocked):
            args = ["score", str(src)]
            for kind, version in (("policy", live.policy_version), ("rules", live.rules_version)):
                if version:  # 0: none was in force
                    path = tmp_path / f"{kind}-{version}.json"
                    path.write_text(run_cli(s, kind, "show", "--version", str(version), "--json"))
                    args += [f"--{kind}", str(path)]
            again = map(decode_decision, run_cli(s, *args).encode().splitlines())
            replayed = next(d for d in again if d.transaction_id == live.transaction_id)
            assert (replayed.decision, replayed.policy_version, replayed.rules_version) == (
                live.decision, live.policy_version, live.rules_version,
            )  # fmt: skip
            assert replayed.score == pytest.approx(live.score, abs=1e-6)
            assert replayed.reason_codes == live.reason_codes
        assert w.proc is not None
        assert w.proc.pid == pid
        assert w.proc.poll() is None  # the same process all along: no restart
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'fraudstream_rule_hits_total{rule="stolen"}' in text
        assert "fraudstream_policy_version 1.0" in text
        assert "fraudstream_rules_version 1.0" in text
        print(json.dumps({"rules_live_s": took_rules, "policy_live_s": took_policy}))
    finally:
        w.stop()
