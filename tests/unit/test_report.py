"""The report's arithmetic: the last outcome per record counts; intervals and tests are named."""

from __future__ import annotations

from fraudstream.core.messages import Outcome
from fraudstream.report import render, summarise


def _o(txid: str, version: str, variant: str, decision: str, is_fraud: bool, kind: str) -> Outcome:
    return Outcome(
        txid,
        version,
        variant,
        decision,
        0.5,
        is_fraud,
        kind,
        10.0,
        "EUR",  # type: ignore[arg-type]
        "2026-11-25T00:00:00+00:00",
    )


def test_reversal_counts_once_with_its_final_label_and_shadow_pairs_are_compared() -> None:
    outcomes = [
        _o("t1", "v1", "champion", "decline", False, "FP"),
        _o("t1", "v2", "shadow", "approve", False, "TN"),
        _o("t1", "v1", "champion", "decline", True, "TP"),  # reversal: replaces the FP
        _o("t1", "v2", "shadow", "approve", True, "FN"),
        _o("t2", "v2", "challenger", "approve", False, "TN"),
        _o("t2", "v1", "shadow", "review", False, "FP"),
    ]
    summary = summarise(outcomes)
    by = {(v["model_version"], v["variant"]): v for v in summary["versions"]}
    assert by[("v1", "champion")]["counts"] == {"TP": 1, "FP": 0, "TN": 0, "FN": 0, "labelled": 1}
    assert by[("v2", "shadow")]["counts"]["FN"] == 1
    assert by[("v1", "champion")]["amounts"]["fraud_caught"] == 10.0
    assert by[("v1", "champion")]["recall"]["value"] == 1.0
    low, high = by[("v1", "champion")]["recall"]["ci95"]
    assert 0.0 < low < 1.0 == high
    kinds = {c["kind"] for c in summary["comparisons"]}
    assert kinds == {"independent samples (different cards)", "paired (the same transactions)"}
    for comp in summary["comparisons"]:
        for t in comp["tests"]:
            assert t["test"]
            assert t["note"]  # far too few samples to say anything: the report says so
            assert t["significant"] is False
    text = render(summary)
    assert "v1" in text
    assert "McNemar" in text
    assert "two-proportion" in text


def test_empty_report_says_so() -> None:
    assert "no labelled outcomes yet" in render(summarise([]))
