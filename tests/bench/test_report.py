"""``bench.report``: the ratio rows name issue 19's target for the guarantee the run used."""

from __future__ import annotations

from fraudstream.bench.report import ratio_rows

RATIOS = {
    "worker_vs_handwritten": 0.61,
    "p99_vs_handwritten@1000": 3.5,
    "seen_p99_vs_100ms_plus_2x_handwritten@2000": 1.25,
    "api_cpu_vs_stream_cpu@c16": 2.4,
    "worker_vs_peer": None,
}


def _labels(guarantee: str | None) -> dict[str, str]:
    config = {} if guarantee is None else {"guarantee": guarantee}
    return dict(ratio_rows({"config": config, "ratios": RATIOS}))  # type: ignore[arg-type]


def test_ratio_rows_name_the_target_of_the_runs_guarantee() -> None:
    alo = _labels("at_least_once")
    eos = _labels(None)  # a result without the setting: the default, exactly once
    assert (
        alo[
            "worker p99 / hand-written ceiling p99, 1,000/s offered "
            "(issue 19 at-least-once target: ≤ 2)"
        ]
        == "3.50×"
    )
    assert "worker p99 / hand-written ceiling p99, 1,000/s offered" in eos
    seen = "worker seen p99 / (100 ms + 2 × ceiling seen p99), 2,000/s offered (issue 19 "
    assert alo[seen + "exactly-once target, this run is at least once: ≤ 1)"] == "1.25×"
    assert eos[seen + "exactly-once target: ≤ 1)"] == "1.25×"
    assert eos["API CPU per request / worker CPU per transaction, concurrency 16"] == "2.40×"
    assert "–" in eos.values()
