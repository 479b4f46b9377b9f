"""Export files as analysts read them: DuckDB over Parquet and CSV; written whole or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from fraudstream.core.evaluation import summarise
from fraudstream.core.ledger import Ledger, Row, join_rows, latest_outcomes, make_window
from fraudstream.export import COLUMNS, in_window, write_rows
from tests.unit.test_evaluation import _random_world
from tests.unit.worlds import DAY, NOW

COUNTS_SQL = """
SELECT model_version, variant,
       count(*) FILTER (outcome = 'TP') AS tp, count(*) FILTER (outcome = 'FP') AS fp,
       count(*) FILTER (outcome = 'TN') AS tn, count(*) FILTER (outcome = 'FN') AS fn,
       count(*) FILTER (source = 'decisions') AS decisions
FROM read_{kind}('{path}')
WHERE decided_at < to_timestamp({end})
GROUP BY ALL ORDER BY ALL
"""


def _rows() -> list[Row]:
    decisions, outs = _random_world()
    return list(join_rows(decisions, latest_outcomes(outs)))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_duckdb_reads_the_export_and_counts_what_the_report_counts(
    fmt: str, tmp_path: Path
) -> None:
    rows = _rows()
    path = tmp_path / f"outcomes.{fmt}"
    assert write_rows(rows, fmt, path) == len(rows)  # type: ignore[arg-type]
    led = Ledger.of(rows)
    window = make_window((), now=NOW, maturity_days=3)
    summary = summarise(led, window)
    kind = "parquet" if fmt == "parquet" else "csv_auto"
    got = duckdb.sql(COUNTS_SQL.format(kind=kind, path=path, end=window.end)).fetchall()
    want = [
        (
            v["model_version"],
            v["variant"],
            *(v["counts"][k] for k in ("TP", "FP", "TN", "FN", "decisions")),
        )
        for v in summary["versions"]
    ]
    assert got == want
    cols = duckdb.sql(f"DESCRIBE SELECT * FROM read_{kind}('{path}')").fetchall()
    assert [c[0] for c in cols] == [name for name, _ in COLUMNS]
    types = {c[0]: c[1] for c in cols}
    assert types["decided_at"].startswith("TIMESTAMP")
    assert types["score"] == "DOUBLE"
    assert types["is_fraud"] == "BOOLEAN"


def test_parquet_types_and_nulls(tmp_path: Path) -> None:
    rows = _rows()
    path = tmp_path / "o.parquet"
    write_rows(rows, "parquet", path)
    table = pq.read_table(path)
    assert str(table.schema.field("decided_at").type) == "timestamp[ms, tz=UTC]"
    unlabelled = sum(r.is_fraud is None for r in rows)
    assert table.column("is_fraud").null_count == unlabelled > 0
    assert table.column("labelled_at").null_count == unlabelled
    assert table.column("card_id").null_count == 0
    first = table.slice(0, 1).to_pylist()[0]
    assert first["transaction_id"] == rows[0].transaction_id
    assert first["decided_at"].isoformat(timespec="milliseconds") == rows[0].decided_at


def test_an_empty_export_is_a_valid_file(tmp_path: Path) -> None:
    for fmt in ("parquet", "csv"):
        path = tmp_path / f"empty.{fmt}"
        assert write_rows([], fmt, path) == 0  # type: ignore[arg-type]
        assert path.exists()
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    assert (tmp_path / "empty.csv").read_text().startswith('"transaction_id","card_id"')


def test_a_failed_export_leaves_no_file_behind(tmp_path: Path) -> None:
    def broken() -> Iterator[Row]:
        yield from _rows()[:10]
        raise RuntimeError("broker went away")

    path = tmp_path / "o.parquet"
    with pytest.raises(RuntimeError, match="broker went away"):
        write_rows(broken(), "parquet", path)
    assert list(tmp_path.iterdir()) == []


def test_in_window_by_decision_time() -> None:
    rows = _rows()
    kept = list(in_window(rows, NOW - 10 * DAY, NOW - 5 * DAY))
    assert 0 < len(kept) < len(rows)
    led = Ledger.of(kept)
    assert led.decided.min() >= NOW - 10 * DAY
    assert led.decided.max() < NOW - 5 * DAY
