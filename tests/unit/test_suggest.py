"""`fraudstream policy suggest` on a file in the export's format: per version and segment, money
in one currency, and a document `policy set --file` takes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fraudstream.cli import main
from fraudstream.core.policy import decode_policy, policy_from_obj
from fraudstream.errors import ConfigError
from fraudstream.suggest import read_rows, suggest_from_rows


def rows(n: int = 4000, seed: int = 3, currencies: tuple[str, ...] = ("EUR",)) -> dict:
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.05
    score = np.clip(0.45 * fraud + rng.random(n) * 0.6, 0, 1)
    labels: list[bool | None] = [bool(f) for f in fraud]
    labels[:50] = [None] * 50  # not labelled yet
    return {
        "transaction_id": [f"t{i}" for i in range(n)],
        "model_version": ["champion-v1" if i % 2 else "challenger-v2" for i in range(n)],
        "score": score.tolist(),
        "is_fraud": labels,
        "amount": rng.uniform(1, 1000, n).round(2).tolist(),
        "currency": [currencies[i % len(currencies)] for i in range(n)],
        "channel": rng.choice(["pos", "ecom"], n).tolist(),
    }


def kwargs(**over: object) -> dict:
    base = {
        "costs": None,
        "review_rate": 0.05,
        "decline_rate": 0.01,
        "band_edges": (),
        "by_channel": False,
        "min_frauds": 20,
        "unlabelled": "exclude",
        "rates": None,
        "note": "t",
    }
    return {**base, **over}


def test_per_version_and_segment_with_sparse_segments_keeping_the_default() -> None:
    sug = suggest_from_rows(rows(), **kwargs(band_edges=(100.0, 990.0), by_channel=True))  # type: ignore[arg-type]
    assert set(sug.policy.models) == {"champion-v1", "challenger-v2"}
    assert (sug.rows_used, sug.rows_unlabelled) == (3950, 50)
    champion = sug.policy.models["champion-v1"]
    assert champion.default is not None
    names = {s.name for s in champion.segments}
    assert "ecom/100-990" in names
    assert "pos/990-" not in names  # ~4 frauds: too few, it keeps the version's thresholds
    sparse = [ln for ln in sug.lines if ln.choice is None]
    assert sparse
    assert all(ln.frauds < 20 for ln in sparse)


def test_costs_refuse_mixed_currencies_without_rates() -> None:
    from fraudstream.core.money import Rates
    from fraudstream.core.thresholds import Costs

    mixed = rows(currencies=("EUR", "GBP"))
    with pytest.raises(ConfigError, match="several currencies"):
        suggest_from_rows(mixed, **kwargs(costs=Costs(5, 20)))  # type: ignore[arg-type]
    sug = suggest_from_rows(
        mixed,
        **kwargs(costs=Costs(5, 20), rates=Rates("EUR", {"GBP": 1.17})),  # type: ignore[arg-type]
    )
    assert sug.currency == "EUR"
    assert all(ln.choice is not None and ln.choice.cost is not None for ln in sug.lines)


def test_the_cli_reads_parquet_and_csv_and_writes_a_document_policy_set_takes(
    tmp_path: Path,
) -> None:
    table = pa.table(rows())
    pq.write_table(table, tmp_path / "o.parquet")
    pacsv.write_csv(table, tmp_path / "o.csv")
    assert read_rows(tmp_path / "o.csv")["model_version"][:2] == ["challenger-v2", "champion-v1"]
    for name in ("o.parquet", "o.csv"):
        out = tmp_path / f"{name}.policy.json"
        result = CliRunner().invoke(
            main,
            [
                "policy", "suggest", str(tmp_path / name), "--cost-review", "5",
                "--cost-decline-good", "25", "--amount-bands", "100", "--out", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "least cost" in result.output
        assert "champion-v1" in result.output
        p = policy_from_obj(json.loads(out.read_text()))
        assert set(p.models) == {"champion-v1", "challenger-v2"}
        assert decode_policy(out.read_bytes()) == p


def test_a_file_without_the_columns_says_which(tmp_path: Path) -> None:
    pq.write_table(pa.table({"score": [0.1]}), tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match="model_version, is_fraud, amount"):
        read_rows(tmp_path / "bad.parquet")
