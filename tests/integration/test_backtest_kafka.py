"""``fraudstream backtest --through-kafka`` (issue 17 item 4): the same labelled history decided
in process and by a live worker through a real broker gives the same scores, for the champion
and the challenger."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fraudstream.backtest.api import backtest_rows
from fraudstream.backtest.run import ThroughKafka
from fraudstream.core.messages import decode_transaction, encode_transaction
from fraudstream.core.replay import delayed_labels
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import REPO

pytestmark = pytest.mark.integration

VERSIONS = ["champion-v1", "challenger-v2"]


def test_in_process_and_through_kafka_give_the_same_scores(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cfg = SimConfig(seed=21, n_cards=250, n_merchants=25, fraud_rate=0.04)
    events = list(generate(cfg, n=1500))
    rows = [(decode_transaction(encode_transaction(e.tx)), e.is_fraud) for e in events]
    labels = delayed_labels(rows, 0.5)
    kw = {"share": 0.3, "shadow": True}
    local = backtest_rows(rows, labels, VERSIONS, REPO / "models", **kw)  # type: ignore[arg-type]
    through = ThroughKafka(kafka_bootstrap, workers=1, partitions=2, log_dir=tmp_path / "workers")
    live = backtest_rows(rows, labels, VERSIONS, REPO / "models", through=through, **kw)  # type: ignore[arg-type]
    assert set(live.decisions) == set(local.decisions) == {r[0].transaction_id for r in rows}
    for tid, d in local.decisions.items():
        got = live.decisions[tid]
        assert (got.model_version, got.decision) == (d.model_version, d.decision), tid
        assert got.score == pytest.approx(d.score, abs=1e-6), tid
    want = {(s.transaction_id, s.model_version): s.score for s in local.scores}
    have = {(s.transaction_id, s.model_version): s.score for s in live.scores}
    assert set(have) == set(want)
    assert max(abs(have[k] - want[k]) for k in want) <= 1e-6


def test_the_cli_prints_the_metrics_through_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    from fraudstream.backtest.cli import backtest

    events = list(generate(SimConfig(seed=22, n_cards=200, n_merchants=20, fraud_rate=0.05), n=800))
    path = tmp_path / "history.csv"
    lines = ["transaction_id,card_id,merchant_id,amount,currency,event_time,is_fraud"]
    lines += [
        f"{e.tx.transaction_id},{e.tx.card_id},{e.tx.merchant_id},{e.tx.amount},"
        f"{e.tx.currency},{e.tx.event_time},{int(e.is_fraud)}"
        for e in events
    ]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        backtest,
        [str(path), "--version", VERSIONS[0], "--label-delay-days", "1", "--through-kafka",
         "--bootstrap", kafka_bootstrap, "--out", str(out), "--models-dir", str(REPO / "models")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "through Kafka" in (out / "metrics.json").read_text()
    assert VERSIONS[0] in res.output
