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
