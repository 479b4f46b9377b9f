"""A simulated run through a real worker on a real broker; then `fraudstream report --json` and
`fraudstream outcomes export` as an analyst runs them. DuckDB over the export must count what
the report counts, per model version, and both what the topics hold."""

from __future__ import annotations

import calendar
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import pytest

from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import read_all
from fraudstream.settings import Settings
from tests.integration.procs import Worker, fresh_settings, run_cli, wait_for

pytestmark = pytest.mark.integration

N = 4000


def _outcome_keys(s: Settings) -> int:
    return len(
        {
            (o["transaction_id"], o["model_version"], o["variant"])
            for o in (orjson.loads(m.value()) for m in read_all(s, [s.topic_outcomes]))
        }
    )


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    logs = tmp_path_factory.mktemp("export")
    s = fresh_settings(
        kafka_bootstrap,
        partitions=2,
        champion="champion-v1",
        challenger="challenger-v2",
        challenger_share=0.3,
        shadow=True,
    )
    create_topics(s)
    w = Worker(s, "worker-export", logs).start()
    try:
        w.wait_ready()
        run_cli(s, "simulate", "-n", str(N), "--rate", "0", "--seed", "21", "--cards", "600",
             "--fraud-rate", "0.02", "--feedback-delay", "3", "--reversals", "0.03")  # fmt: skip
        assert len(wait_for(s, [s.topic_decisions], N)) == N
        # Every label sent has been joined once the outcomes stop changing.
        last, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = _outcome_keys(s)
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif now > 0 and time.monotonic() - quiet_since > 6:
                break
            time.sleep(1.0)
        yield s
    finally:
        w.stop()


def _decision_counts(s: Settings) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for m in read_all(s, [s.topic_decisions], timeout=60):
        d = orjson.loads(m.value())
        counts[(d["model_version"], d["variant"])] += 1
        if d.get("shadow"):
            counts[(d["shadow"]["model_version"], "shadow")] += 1
    return counts


def _outcome_counts(s: Settings) -> Counter[tuple[str, str, str]]:
    latest = {}
    for m in read_all(s, [s.topic_outcomes], timeout=60):
        o = orjson.loads(m.value())
        latest[(o["transaction_id"], o["model_version"], o["variant"])] = o["outcome"]
    return Counter((v, var, kind) for (_, v, var), kind in latest.items())


def _duck(path: Path, reader: str, end: float, since: float | None = None) -> list[tuple]:
    where = f"decided_at < to_timestamp({end})"
    if since is not None:
        where += f" AND decided_at >= to_timestamp({since})"
    return duckdb.sql(f"""
        SELECT model_version, variant,
               count(*) FILTER (outcome = 'TP'), count(*) FILTER (outcome = 'FP'),
               count(*) FILTER (outcome = 'TN'), count(*) FILTER (outcome = 'FN'),
               count(*) FILTER (source = 'decisions')
        FROM {reader}('{path}') WHERE {where} GROUP BY ALL ORDER BY ALL
    """).fetchall()


def _report_counts(summary: dict[str, Any]) -> list[tuple]:
    keys = ("TP", "FP", "TN", "FN", "decisions")
    return [
        (v["model_version"], v["variant"], *(v["counts"][k] for k in keys))
        for v in summary["versions"]
    ]


@pytest.fixture(scope="module")
def parquet(run: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exported") / "outcomes.parquet"
    assert f"wrote {2 * N} rows" in run_cli(run, "outcomes", "export", "--out", str(path))
    return path


def test_export_loads_in_duckdb_and_matches_the_report(
    run: Settings, parquet: Path, tmp_path: Path
) -> None:
    s = run
    summary = json.loads(run_cli(s, "report", "--json", "--maturity-days", "0"))
    csv = tmp_path / "outcomes.csv"
    run_cli(s, "outcomes", "export", "--format", "csv", "--out", str(csv))

    end = summary["window"]["mature_before_ts"]
    want = _report_counts(summary)
    assert {v for v, _, *_ in want} == {"champion-v1", "challenger-v2"}
    assert {var for _, var, *_ in want} == {"champion", "challenger", "shadow"}
    assert _duck(parquet, "read_parquet", end) == want
    assert _duck(csv, "read_csv_auto", end) == want

    # Both agree with the topics themselves, read independently.
    decisions = _decision_counts(s)
    outcomes = _outcome_counts(s)
    assert sum(decisions.values()) == 2 * N  # shadow mode: every transaction scored twice
    for version, variant, tp, fp, tn, fn, n in want:
        assert n == decisions[(version, variant)]
        got = [outcomes[(version, variant, k)] for k in ("TP", "FP", "TN", "FN")]
        assert [tp, fp, tn, fn] == got
    assert sum(tp + fn for _, _, tp, _, _, fn, _ in want) > 50  # enough frauds to mean something

    # pandas reads both files too, with real types.
    frame = pd.read_parquet(parquet)
    assert len(frame) == 2 * N
    assert str(frame["decided_at"].dtype).startswith("datetime64")
    assert set(frame["currency"]) >= {"EUR", "GBP"}
    from_csv = pd.read_csv(csv, parse_dates=["decided_at", "labelled_at"])
    assert len(from_csv) == 2 * N
    assert from_csv["outcome"].value_counts().to_dict() == (
        frame["outcome"].value_counts().to_dict()
    )

    # The statistics the report prints come with it: card-level intervals and money per currency.
    v = summary["versions"][0]
    assert v["rates"]["recall"]["cards"] > 0
    assert "EUR" in v["money"]
    comp = next(c for c in summary["comparisons"] if "champion" in c)
    assert [t["metric"] for t in comp["tests"]][:3] == ["recall", "fpr", "precision"]
    assert any(c["kind"] == "paired (the same transactions)" for c in summary["comparisons"])


def test_report_window_and_maturity(run: Settings, parquet: Path, tmp_path: Path) -> None:
    s = run
    ((lo, hi),) = duckdb.sql(
        f"SELECT epoch(min(decided_at)), epoch(max(decided_at)) FROM '{parquet}'"
    ).fetchall()
    mid = lo + (hi - lo) / 2
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mid))
    cut = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    summary = json.loads(run_cli(s, "report", "--json", "--maturity-days", "0", "--since", stamp))
    assert summary["window"]["since"].startswith(stamp)
    assert _duck(parquet, "read_parquet", summary["window"]["mature_before_ts"], since=cut) == (
        _report_counts(summary)
    )
    windowed = tmp_path / "since.parquet"
    run_cli(s, "outcomes", "export", "--since", stamp, "--out", str(windowed))
    ((earliest,),) = duckdb.sql(f"SELECT epoch(min(decided_at)) FROM '{windowed}'").fetchall()
    assert earliest >= cut

    # The measured maturity comes from the label delays of this run (seconds, not days).
    measured = json.loads(run_cli(s, "report", "--json"))
    assert measured["window"]["maturity_source"].startswith("observed")
    assert 0 < measured["window"]["maturity_days"] * 86400 < 120
    # A day's maturity: nothing from this run is mature yet, and the text says so; not one of
    # its decisions was read (the reader stops at the window's end, by broker timestamp).
    text = run_cli(s, "report", "--maturity-days", "1")
    assert "no mature decisions or labelled outcomes in this window yet" in text
    rows = json.loads(run_cli(s, "report", "--json", "--maturity-days", "1"))["rows"]
    assert rows["read"] == rows["from_outcomes_only"] > 0
    # The text report prints money, per currency.
    text = run_cli(s, "report", "--maturity-days", "0")
    assert "Money of labelled outcomes, each currency on its own" in text
    assert any(line.startswith("EUR        champion-v1") for line in text.splitlines())
    assert "champion-v1 (champion) vs challenger-v2 (challenger)" in text
