"""`fraudstream bench` on a tiny load against the session broker: the table's shape, never its
speed (issue 6), API section included (issue 9)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fraudstream.bench.cli import bench

pytestmark = pytest.mark.integration

THROUGHPUT_KEYS = {
    "passthrough",
    "faust_passthrough",
    "handwritten",
    "handwritten-2",
    "naive",
    "peer",
    "worker-2",
    "worker-1",
}
HAVE_QUIX = importlib.util.find_spec("quixstreams") is not None
HAVE_PSUTIL = importlib.util.find_spec("psutil") is not None
HAVE_WRK = shutil.which("wrk") is not None


def test_bench_tiny_load_has_the_full_table(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(
        bench,
        [
            "--quick",
            "-n",
            "2000",
            "--rates",
            "1000",
            "--partitions",
            "2",
            "--rate-seconds",
            "2",
            "--handwritten-x2",
            "--warmup-seconds",
            "1",
            "--cap-seconds",
            "8",
            "--api-concurrency",
            "4",
            "--api-seconds",
            "2",
            "--bootstrap",
            kafka_bootstrap,
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "Throughput" in result.output
    assert "latency" in result.output
    assert "Scoring API" in result.output

    data = json.loads((out / "bench.json").read_text())
    md = (out / "bench.md").read_text()
    assert md.startswith("# fraudstream bench")
    assert "## Scoring API" in md
    assert "| Faust pass-through ceiling |" in md
    assert "worker ×1 / Faust pass-through ceiling" in md
    for key in ("machine", "config", "preload", "stages_us_per_tx", "throughput", "latency",
                "api", "ratios", "skipped", "notes", "contenders"):  # fmt: skip
        assert key in data, key
    assert data["machine"]["logical_cores"] >= 1
    for mod in ("python", "xgboost", "faust", "confluent_kafka"):
        assert data["machine"][mod]
    assert data["preload"]["transactions"] == 2000
    assert all(v > 0 for v in data["stages_us_per_tx"].values())

    rows = {r["key"]: r for r in data["throughput"]}
    expected = THROUGHPUT_KEYS if HAVE_QUIX else THROUGHPUT_KEYS - {"peer"}
    assert set(rows) == expected
    if not HAVE_QUIX:
        assert "peer" in data["skipped"]
    for key, r in rows.items():
        assert r["decided"] > 0, (key, r["note"])
        assert r["seconds"] > 0, (key, r)
        assert r["tx_per_s"] > 0, (key, r)
        assert len(r["peak_rss_mb"]) == r["processes"]
        if HAVE_PSUTIL:
            assert all(m > 0 for m in r["peak_rss_mb"]), (key, r)
    assert rows["worker-2"]["processes"] == 2
    assert rows["handwritten-2"]["processes"] == 2
    assert rows["worker-1"]["processes"] == 1
    for key in ("passthrough", "faust_passthrough", "handwritten", "worker-1"):
        assert rows[key]["complete"], (key, rows[key]["note"])

    warm, lat, ceiling = data["latency"]
    assert (warm["contender"], lat["contender"]) == ("worker", "worker")
    # The latency ceiling: the hand-written pipeline at the same rate, without a warm-up row.
    assert ceiling["contender"] == "handwritten"
    assert not ceiling["warmup"]
    assert (ceiling["offered_rate"], ceiling["sent"]) == (1000, 2000)
    assert 0 < ceiling["p50_ms"] <= ceiling["p99_ms"] <= ceiling["max_ms"]
    assert "| hand-written ceiling | 1,000 |" in md
    assert warm["warmup"]
    assert warm["offered_rate"] == 1000
    assert warm["sent"] == 1000
    assert "warm-up" in warm["note"]
    assert not lat["warmup"]
    assert lat["offered_rate"] == 1000
    assert lat["sent"] == 2000
    assert lat["decided"] > 0
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    # What a read_committed consumer of decisions gets, for the worker and for the ceiling.
    for row in (lat, ceiling):
        assert 0 < row["seen_p50_ms"] <= row["seen_p99_ms"], row
    if HAVE_PSUTIL:  # where the CPU went: the worker, its decide loop's thread, the broker
        assert 0 < lat["main_thread_cpu_pct"] <= lat["worker_cpu_pct"], lat
        assert lat["companion_cpu_pct"] > 0, lat  # the join and the aggregator read decisions
        assert ceiling["companion_cpu_pct"] is None, ceiling  # the ceiling has none
        assert lat["broker_cpu_pct"] > 0, lat
        assert 0 < lat["machine_busy_pct"] <= 100, lat
        assert rows["worker-1"]["broker_cpu_us_per_tx"] > 0, rows["worker-1"]

    [api] = data["api"]
    assert api["tool"] == ("wrk" if HAVE_WRK else "aiohttp")
    assert api["concurrency"] == 4
    assert api["seconds"] > 0
    assert api["ok"] > 0, api["note"]
    assert api["requests"] >= api["ok"]
    assert api["rps"] > 0
    assert 0 < api["p50_ms"] <= api["p99_ms"]
    assert data["config"]["api_concurrency"] == [4]

    ratios = data["ratios"]
    assert set(ratios) == {
        "worker_vs_passthrough",
        "worker_vs_faust_passthrough",
        "worker_vs_handwritten",
        "worker_vs_naive",
        "worker_vs_peer",
        "two_workers_vs_one",
        "two_handwritten_vs_one",
        "two_workers_cpu_bound",
        "p99_vs_handwritten@1000",
        "seen_p99_vs_handwritten@1000",
        "seen_p99_vs_100ms_plus_2x_handwritten@1000",
    } | ({"api_cpu_vs_stream_cpu@c4"} if HAVE_PSUTIL else set())
    for name, value in ratios.items():
        if (name == "worker_vs_peer" and not HAVE_QUIX) or (
            name == "two_workers_cpu_bound" and not HAVE_PSUTIL
        ):
            assert value is None
        else:
            assert value is not None, name
            assert value > 0, name
