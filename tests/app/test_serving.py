"""The serving manager: what decides, and how its reasons attribute a score, across reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fraudstream.app.serving import ServingManager
from fraudstream.core.messages import Routing
from fraudstream.core.policy import NO_POLICY
from fraudstream.settings import Settings

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_the_reasons_method_is_a_setting_path_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).reasons_method == "path"  # type: ignore[call-arg]
    monkeypatch.setenv("FRAUD_REASONS_METHOD", "shap")
    assert Settings(_env_file=None).reasons_method == "shap"  # type: ignore[call-arg]
    monkeypatch.setenv("FRAUD_REASONS_METHOD", "lime")
    with pytest.raises(ValueError, match="reasons_method"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_reasons_method_survives_a_policy_change_and_a_model_swap() -> None:
    manager = ServingManager(MODELS, "shap")
    assert manager.start_sync(Routing(champion="champion-v1")).reasons == "shap"
    manager.apply_policy(NO_POLICY)
    assert manager.current is not None
    assert manager.current.reasons == "shap"
    swapped = asyncio.run(manager.apply(Routing(champion="challenger-v2")))
    assert (swapped.routing.champion, swapped.reasons) == ("challenger-v2", "shap")
