"""Labelled series start at zero for the label values known up front, so rates, dashboards and
alerts have a series before the first event; the challenger-share gauge follows the routing."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

from fraudstream.app import metrics
from fraudstream.core.messages import Routing

REPO = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_every_dead_letter_reason_of_the_contract_is_exported_at_start() -> None:
    contract = (REPO / "docs" / "CONTRACT.md").read_text()
    section = contract[contract.index("Dead-letter `error.class` values") :]
    documented = set(re.findall(r"`([a-z_]+)`", section.split("\n\n")[0])) - {"error", "class"}
    exported = {r for reasons in metrics.DEAD_LETTER_REASONS.values() for r in reasons}
    assert documented <= exported, documented - exported
    for source, reasons in metrics.DEAD_LETTER_REASONS.items():
        for reason in reasons:
            value = sample("fraudstream_dead_letters_total", reason=reason, source=source)
            assert value is not None, (reason, source)


def test_decision_and_outcome_series_exist_for_a_loaded_version() -> None:
    from fraudstream.app.serving import load_served

    served = load_served(REPO / "models", "champion-v1")
    metrics.observe_model_loaded(served, "champion")
    for kind in ("approve", "review", "decline"):
        labels = {"decision": kind, "model_version": "champion-v1", "variant": "champion"}
        assert sample("fraudstream_decisions_total", **labels) is not None
    for variant in ("champion", "shadow"):
        for cell in ("TP", "FP", "TN", "FN"):
            labels = {"model_version": "champion-v1", "variant": variant, "outcome": cell}
            assert sample("fraudstream_feedback_outcomes_total", **labels) is not None
    assert sample("fraudstream_model_load_failures_total", version="champion-v1") is not None


def test_challenger_share_gauge_is_the_routing_in_force() -> None:
    metrics.observe_routing(Routing("champion-v1", "challenger-v2", 0.25, True, "s", ""))
    assert sample("fraudstream_challenger_share") == 0.25
    metrics.observe_routing(Routing("champion-v1", None, 0.0, False, "s", ""))
    assert sample("fraudstream_challenger_share") == 0.0
