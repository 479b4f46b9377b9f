"""``fraudstream backtest`` in process: the engine's scores equal the training path's, outputs
are written, metrics follow the records, the Handbook's filter leaves out known cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fraudstream.backtest.api import backtest_rows
from fraudstream.backtest.evaluate import evaluate
from fraudstream.cli import main
from fraudstream.core import registry
from fraudstream.core.replay import replay
from fraudstream.sim.files import write_labelled
from fraudstream.sim.generator import SimConfig, SimEvent, generate
from fraudstream.train import Params, train
from fraudstream.train.dataset import label_events

SIM = SimConfig(seed=12, n_cards=800, n_merchants=200, fraud_rate=0.02)
DAY = 86400.0


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(generate(SIM, days=10))


@pytest.fixture(scope="module")
def models(events: list[SimEvent], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for version, depth in (("bt-a", 3), ("bt-b", 5)):
        train(
            events, version, root, label_delay_days=2.0, warmup_days=1.0, nthread=2,
            params=Params(n_trees=30, max_depth=depth, learning_rate=0.2, seed=1),
        )  # fmt: skip
    return root


def test_engine_scores_equal_the_training_path(events: list[SimEvent], models: Path) -> None:
    labels = label_events(events, None, 2.0)
    start = events[0].tx.ts + 5 * DAY
    run = backtest_rows(events, labels, ["bt-a", "bt-b"], models, start=start)
    X, ids = replay((e.tx for e in events), labels, dtype=np.float32)
    first = next(i for i, t in enumerate(ids) if run.truth[t].ts >= start)
    for version in ("bt-a", "bt-b"):
        want = registry.load(models, version).predict(X[first:])
        got = {s.transaction_id: s.score for s in run.scores if s.model_version == version}
        assert len(got) == len(ids) - first  # the challenger shadows every transaction
        assert np.array_equal(np.array([got[t] for t in ids[first:]]), want)
    assert set(run.decisions) == set(ids[first:])
    assert {d.model_version for d in run.decisions.values()} == {"bt-a"}


def test_cli_writes_every_output(events: list[SimEvent], models: Path, tmp_path: Path) -> None:
    path = tmp_path / "history.parquet"
    write_labelled(path, events)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        ["backtest", str(path), "--version", "bt-a", "--version", "bt-b", "--models-dir",
         str(models), "--label-delay-days", "2", "--from", _date(events[0].tx.ts + 5 * DAY),
         "--out", str(out), "--card-k", "20"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("decisions.parquet", "scores.parquet", "outcomes.parquet", "metrics.json",
                 "report.txt", "pr-bt-a.png", "pr-bt-b.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "pr-bt-a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = json.loads((out / "metrics.json").read_text())
    m = body["by_version"]["bt-a"]
    assert 0.5 < m["auc_roc"] <= 1.0
    assert (
        m["decisions"]["approve"] + m["decisions"]["review"] + m["decisions"]["decline"]
        == (m["transactions"])
    )
    money = next(iter(m["money"].values()))
    assert money["fraud_caught"] + money["fraud_missed"] == pytest.approx(money["fraud_total"])
    days = body["by_day"]["bt-a"]
    assert sum(d["transactions"] for d in days) == m["transactions"]
    # The mean of the days' card precision is the period's (the Handbook's sequence).
    assert np.mean([d["card_precision_at_20"] for d in days]) == pytest.approx(
        m["card_precision_at_20"]
    )
    outcomes = pq.read_table(out / "outcomes.parquet").to_pylist()
    assert {o["outcome"] for o in outcomes} <= {"TP", "FP", "TN", "FN"}
    assert len(outcomes) == 2 * m["transactions"]
    assert "per day" in res.output
    assert "card precision" not in res.output or "CP@20" in res.output


def _date(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def test_known_defrauded_cards_are_left_out(events: list[SimEvent], models: Path) -> None:
    labels = label_events(events, None, 1.0)
    start = events[0].tx.ts + 6 * DAY
    run = backtest_rows(events, labels, ["bt-a"], models, start=start)
    plain = evaluate(run)
    since = events[0].tx.ts
    filtered = evaluate(run, known_since=since)
    assert filtered.excluded_known_cards > 0
    kept = filtered.by_version["bt-a"]["transactions"]
    assert kept + filtered.excluded_known_cards == plain.by_version["bt-a"]["transactions"]
    # No transaction kept belongs to a card whose fraud was reported before its day.
    first_known: dict[str, float] = {}
    for lab in labels:
        t = run.truth[lab.transaction_id]
        if lab.is_fraud and t.ts >= since:
            first_known[t.card_id] = min(first_known.get(t.card_id, np.inf), lab.reported_at)
    vs = filtered.scores["bt-a"]
    for card, day in zip(vs.card.tolist(), vs.day.tolist(), strict=True):
        assert first_known.get(card, np.inf) >= day * DAY


def test_a_backtest_decides_under_the_policy_and_rules_it_is_given(
    events: list[SimEvent], models: Path, tmp_path: Path
) -> None:
    """As a worker with those versions in force: a blocked card is declined with the rule
    named, and every decision records the versions (so a backtest can reproduce live
    decisions from the versions they recorded)."""
    from fraudstream.core.policy import ModelPolicy, Policy, Thresholds
    from fraudstream.core.rules import ListRule, RuleSet, card_digest, encode_rules

    labels = label_events(events, None, 2.0)
    start = events[0].tx.ts + 8 * DAY
    card = next(e.tx.card_id for e in events if e.tx.ts >= start)
    rules = RuleSet(5, (ListRule("stolen", "card", frozenset({card_digest(card)})),))
    review_all = Policy(3, {"bt-a": ModelPolicy(default=Thresholds(review=0.0, decline=1.0))})
    run = backtest_rows(
        events, labels, ["bt-a"], models, start=start, policy=review_all, rules=rules
    )
    assert {(d.policy_version, d.rules_version) for d in run.decisions.values()} == {(3, 5)}
    mine = [d for d in run.decisions.values() if d.card_id == card]
    assert mine
    assert {d.decision for d in mine} == {"decline"}
    assert {(d.reason_codes[0].code, d.reason_codes[0].ref) for d in mine} == {
        ("RULE_BLOCK_CARD", "stolen")
    }
    others = [d for d in run.decisions.values() if d.card_id != card]
    assert {d.decision for d in others} == {"review"}  # the policy, not the model's thresholds

    # The command line reads the same documents (`rules show --version N --json`).
    path = tmp_path / "history.parquet"
    write_labelled(path, events)
    rules_file = tmp_path / "rules.json"
    rules_file.write_bytes(encode_rules(rules))
    res = CliRunner().invoke(
        main,
        ["backtest", str(path), "--version", "bt-a", "--models-dir", str(models),
         "--label-delay-days", "2", "--from", _date(start), "--out", str(tmp_path / "out"),
         "--rules", str(rules_file)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    body = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert body["by_version"]["bt-a"]["decisions"]["decline"] >= len(mine)
