"""A small end-to-end training run: card state must clearly help; thresholds are ordered."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fraudstream.core import registry
from fraudstream.core.features import CARD_FEATURE_SLICE, FEATURE_NAMES
from fraudstream.sim.files import write_labelled
from fraudstream.sim.generator import SimConfig, SimEvent, generate
from fraudstream.train import (
    auc_roc,
    average_precision,
    precision_at_k,
    train,
    train_from_file,
    train_from_simulator,
)

SIM = {"n_cards": 1500, "n_merchants": 400, "fraud_rate": 0.01}
FAST = {"n_trees": 80, "max_depth": 4, "learning_rate": 0.2, "warmup_days": 2.0, "nthread": 2}


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(generate(SimConfig(seed=8, **SIM), days=14))  # ~40 000 transactions


def test_metrics_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert auc_roc(y, s) == pytest.approx(8 / 9)  # 8 of 9 pairs ranked right
    assert auc_roc(y, np.ones(6)) == 0.5  # all tied
    assert math.isnan(auc_roc(np.zeros(3, bool), np.ones(3)))
    # Ranking: .9(+) .8(+) .4(-) .35(+) → AP = (1 + 1 + 3/4) / 3
    assert average_precision(y, s) == pytest.approx((1 + 1 + 0.75) / 3)
    assert average_precision(y, y.astype(float)) == 1.0
    assert precision_at_k(y, s, 2) == 1.0
    assert precision_at_k(y, s, 4) == 0.75


def test_card_state_clearly_beats_stateless(events: list[SimEvent], tmp_path: Path) -> None:
    meta, full = train(events, "t-full", tmp_path, seed=1, **FAST)
    _, flat = train(events, "t-flat", tmp_path, seed=1, use_card_state=False, save=False, **FAST)
    m, f = full["metrics"], flat["metrics"]
    assert m["auc_roc"] > f["auc_roc"] + 0.01, (m, f)
    assert m["average_precision"] > f["average_precision"] + 0.1, (m, f)
    assert m["auc_roc"] > 0.9

    assert meta is not None
    th = meta.thresholds
    assert 0.0 < th["review"] < th["decline"] < 1.0
    assert m["at_review"]["flag_rate"] == pytest.approx(0.01, abs=0.002)
    assert m["at_decline"]["flag_rate"] == pytest.approx(0.002, abs=0.001)
    assert "1.0%" in meta.threshold_rule
    tr = meta.training
    assert tr["fit"]["to"] <= tr["early_stopping"]["from"] <= tr["validation"]["from"]
    assert tr["validation"]["rows"] == pytest.approx(
        0.25 * (tr["rows"] - tr["warmup"]["rows"]), abs=2
    )

    # The saved model round-trips and scores like the booster that was trained.
    loaded = registry.load(tmp_path, "t-full")
    assert loaded.booster.feature_names == list(FEATURE_NAMES)
    assert registry.verify(tmp_path, "t-full") == []
    X = np.random.default_rng(0).uniform(0, 3, size=(5, len(FEATURE_NAMES))).astype(np.float32)
    assert np.array_equal(loaded.predict(X), full["booster"].inplace_predict(X))


def test_stateless_model_ignores_card_features(events: list[SimEvent], tmp_path: Path) -> None:
    _, rep = train(events[:20000], "t", tmp_path, use_card_state=False, save=False, **FAST)
    gain = rep["booster"].get_score(importance_type="gain")
    assert not set(gain) & set(FEATURE_NAMES[CARD_FEATURE_SLICE])


def test_too_little_data_is_refused(events: list[SimEvent], tmp_path: Path) -> None:
    legit = [e for e in events[:5000] if not e.is_fraud]
    with pytest.raises(ValueError, match="too little data"):
        train(legit, "t", tmp_path, **FAST)


def test_train_from_simulator_and_file(tmp_path: Path) -> None:
    sim = {"n_cards": 600, "n_merchants": 200, "fraud_rate": 0.02}
    meta, rep = train_from_simulator(
        "sim-v",
        tmp_path / "models",
        days=6,
        seed=3,
        sim=sim,
        n_trees=20,
        max_depth=3,
        warmup_days=1,
    )
    assert meta is not None
    assert "simulator seed=3" in meta.training["source"]
    path = tmp_path / "data.parquet"
    write_labelled(path, generate(SimConfig(seed=3, **sim), days=6))  # type: ignore[arg-type]
    meta2, rep2 = train_from_file(
        path, "file-v", tmp_path / "models", n_trees=20, max_depth=3, warmup_days=1, seed=3
    )
    assert meta2 is not None
    # Same data through the file: same features, same model.
    assert rep2["metrics"]["auc_roc"] == rep["metrics"]["auc_roc"]
    assert {m.version for m in registry.list_versions(tmp_path / "models")} == {"sim-v", "file-v"}
