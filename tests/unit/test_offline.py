"""`fraudstream score`'s engine run: every transaction decided once in file order, per-card state
carried across batches, bad lines and repeats reported with their reason, never fatal."""

from __future__ import annotations

from pathlib import Path

import orjson

from fraudstream.core.messages import decode_decision, encode_transaction
from fraudstream.offline import score_lines
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate

REPO = Path(__file__).resolve().parents[2]


def test_scores_a_file_in_batches_and_reports_what_it_cannot_decide() -> None:
    s = Settings(_env_file=None, models_dir=REPO / "models", batch_size=16)  # type: ignore[call-arg]
    txs = [ev.tx for ev in generate(SimConfig(seed=4, n_cards=20), n=50)]
    lines = [encode_transaction(t) for t in txs]
    lines += [b"", b"{not json", lines[3], orjson.dumps({"transaction_id": "x"})]
    out: list[bytes] = []
    problems: list[str] = []
    run = score_lines(s, lines, out.append, problems.append)
    assert (run.decided, run.duplicates, run.rejected) == (50, 1, 2)
    decided = [decode_decision(raw) for raw in out]
    assert [d.transaction_id for d in decided] == [t.transaction_id for t in txs]
    assert {d.model_version for d in decided} == {"champion-v1"}
    assert len(problems) == 3
    assert any(p.startswith("line 52: not_json:") for p in problems)
    assert any(p.startswith("line 54: schema:") for p in problems)
    assert f"{txs[3].transaction_id}: duplicate: already decided, not decided again" in problems


def test_score_dry_runs_a_policy_and_rules_file_before_publishing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fraudstream.cli import main

    txs = [ev.tx for ev in generate(SimConfig(seed=5, n_cards=10), n=30)]
    src = tmp_path / "tx.jsonl"
    src.write_bytes(b"\n".join(encode_transaction(t) for t in txs))
    blocked = txs[0].card_id
    (tmp_path / "rules.json").write_text(
        orjson.dumps(
            {"rules": [{"id": "stolen", "kind": "list", "field": "card", "values": [blocked]}]}
        ).decode()
    )
    (tmp_path / "policy.json").write_text(
        orjson.dumps({"version": 3, "models": {"*": {"review": 0, "decline": 1}}}).decode()
    )
    result = CliRunner(env={"FRAUD_MODELS_DIR": str(REPO / "models")}).invoke(
        main,
        [
            "score", str(src), "--policy", str(tmp_path / "policy.json"),
            "--rules", str(tmp_path / "rules.json"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    decided = [decode_decision(line.encode()) for line in result.stdout.splitlines()]
    assert len(decided) == 30
    for d in decided:
        assert (d.policy_version, d.rules_version) == (3, 1)
        if d.card_id == blocked:
            assert d.decision == "decline"
            assert d.reason_codes[0].ref == "stolen"
        else:
            assert d.decision == "review"
