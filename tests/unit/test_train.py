"""Training end to end on small simulated histories: point-in-time labels, time-ordered splits
with the label-delay gap, no early stopping, the folds search, refit, and the file path."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from fraudstream.core import registry
from fraudstream.core.features import CARD_FEATURE_SLICE, ENTITY_FEATURE_SLICE, FEATURE_NAMES
from fraudstream.core.replay import LabelEvent
from fraudstream.sim.files import write_labelled
from fraudstream.sim.generator import SimConfig, SimEvent, generate
from fraudstream.train import (
    Params,
    auc_roc,
    average_precision,
    dataset,
    precision_at_k,
    train,
    train_from_file,
    train_from_simulator,
)
from fraudstream.train.search import default_grid, folds
from fraudstream.train.trainer import simulator_labels

SIM = {"n_cards": 1200, "n_merchants": 300, "fraud_rate": 0.012}
FAST = Params(n_trees=80, max_depth=4, learning_rate=0.2, seed=1)
KW = {"params": FAST, "warmup_days": 2.0, "nthread": 2}


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(generate(SimConfig(seed=8, **SIM), days=12))  # ~29 000 transactions


@pytest.fixture(scope="module")
def data(events: list[SimEvent]) -> dataset.Dataset:
    return dataset.build(events, simulator_labels(events, seed=8, delay_days=2.0))


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


def test_state_clearly_beats_stateless(data: dataset.Dataset, tmp_path: Path) -> None:
    meta, full = train(data, "t-full", tmp_path, gap_days=2.0, **KW)
    _, flat = train(
        data, "t-flat", tmp_path, gap_days=2.0, use_card_state=False, use_entities=False,
        save=False, **KW,
    )  # fmt: skip
    m, f = full["metrics"], flat["metrics"]
    assert m["auc_roc"] > f["auc_roc"] + 0.01, (m, f)
    assert m["average_precision"] > f["average_precision"] + 0.1, (m, f)
    assert m["auc_roc"] > 0.9
    assert "card_precision_at_100" in m

    assert meta is not None
    th = meta.thresholds
    assert 0.0 < th["review"] < th["decline"] < 1.0
    assert m["at_review"]["flag_rate"] == pytest.approx(0.01, abs=0.002)
    assert m["at_decline"]["flag_rate"] == pytest.approx(0.002, abs=0.001)
    assert "1.0%" in meta.threshold_rule
    tr = meta.training
    assert tr["fit"]["to"] <= tr["gap"]["from"] <= tr["validation"]["from"]
    gap = _t(tr["validation"]["from"]) - _t(tr["fit"]["to"])
    assert 2 * 86400 <= gap <= 2 * 86400 + 3600  # the label delay is left out before validation
    assert tr["validation"]["rows"] == pytest.approx(
        0.25 * (tr["rows"] - tr["warmup"]["rows"]), abs=2
    )
    # No early stopping: the trees asked for are the trees saved.
    assert meta.n_trees == FAST.n_trees
    assert meta.params["class_weight"] == "none"
    assert tr["scale_pos_weight"] == 1.0
    _, sq = train(data, "t-sqrt", tmp_path, gap_days=2.0, save=False,
                  **{**KW, "params": replace(FAST, class_weight="sqrt")})  # fmt: skip
    assert sq["training"]["scale_pos_weight"] == pytest.approx(
        math.sqrt((tr["fit"]["rows"] - tr["fit"]["frauds"]) / tr["fit"]["frauds"]), rel=1e-3
    )

    # The saved model round-trips and scores like the booster that was trained.
    loaded = registry.load(tmp_path, "t-full")
    assert loaded.booster.feature_names == list(FEATURE_NAMES)
    assert registry.verify(tmp_path, "t-full") == []
    X = np.random.default_rng(0).uniform(0, 3, size=(5, len(FEATURE_NAMES))).astype(np.float32)
    assert np.array_equal(loaded.predict(X), full["booster"].inplace_predict(X))


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_ablations_ignore_their_columns(data: dataset.Dataset, tmp_path: Path) -> None:
    _, rep = train(data, "t", tmp_path, use_card_state=False, use_entities=False, save=False, **KW)
    gain = rep["booster"].get_score(importance_type="gain")
    assert not set(gain) & set(FEATURE_NAMES[CARD_FEATURE_SLICE])
    assert not set(gain) & set(FEATURE_NAMES[ENTITY_FEATURE_SLICE])


def test_too_little_data_is_refused(events: list[SimEvent], tmp_path: Path) -> None:
    legit = [e for e in events[:5000] if not e.is_fraud]
    with pytest.raises(ValueError, match="too little data"):
        train(legit, "t", tmp_path, label_delay_days=1, **KW)


def test_label_arrival_is_required(events: list[SimEvent], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="when did the labels become known"):
        train(events[:3000], "t", tmp_path, **KW)


def test_search_on_time_folds(data: dataset.Dataset, tmp_path: Path) -> None:
    fs = folds(data.ts, 1000, len(data) - 1000, 3, 86400.0)
    assert len(fs) == 3
    for fit_rows, val_rows in fs:
        assert data.ts[fit_rows.stop - 1] <= data.ts[val_rows.start] - 86400.0  # gap, no overlap
    grid = default_grid(FAST)[:2]
    _, rep = train(
        data, "t", tmp_path, gap_days=1.0, search_grid=grid, tree_counts=(20, 60), save=False,
        **KW,
    )  # fmt: skip
    search = rep["search"]
    assert len(search["table"]) == 2 * 2  # configurations × tree counts
    best = max(search["table"], key=lambda e: (e["average_precision"], e["auc_roc"]))
    assert rep["params"]["n_trees"] == best["n_trees"] == rep["n_trees"]
    assert rep["params"]["class_weight"] == best["class_weight"]
    assert all(len(e["average_precision_per_fold"]) == 3 for e in search["table"])


def test_refit_trains_on_the_validation_period_too(data: dataset.Dataset, tmp_path: Path) -> None:
    _, once = train(data, "a", tmp_path, gap_days=1.0, save=False, **KW)
    _, refit = train(data, "b", tmp_path, gap_days=1.0, refit=True, save=False, **KW)
    assert once["metrics"]["auc_roc"] == refit["metrics"]["auc_roc"]  # held-out, first fit
    assert refit["training"]["fitted_on"]["rows"] > once["training"]["fitted_on"]["rows"]
    assert refit["training"]["fitted_on"]["to"] == refit["training"]["validation"]["to"]


def test_label_features_only_see_reported_labels(events: list[SimEvent]) -> None:
    # The same history with labels arriving later gives less label knowledge, never more.
    part = events[:15000]
    early = dataset.build(part, label_delay_days=1.0)
    late = dataset.build(part, label_delay_days=4.0)
    col = FEATURE_NAMES.index("m_frauds_30d")
    assert (late.X[:, col] <= early.X[:, col]).all()
    assert late.X[:, col].sum() < early.X[:, col].sum()
    never = dataset.build(part, [])
    assert never.X[:, col].sum() == 0


def test_train_from_simulator_and_file(tmp_path: Path) -> None:
    sim = {"n_cards": 600, "n_merchants": 200, "fraud_rate": 0.02}
    small = Params(n_trees=20, max_depth=3, seed=3)
    meta, _ = train_from_simulator(
        "sim-v", tmp_path / "models", days=8, seed=3, sim=sim, params=small, warmup_days=1
    )
    assert meta is not None
    assert "simulator seed=3" in meta.training["source"]
    # A file with an arrival-time column: labels arrive then (one per transaction here).
    events = list(generate(SimConfig(seed=3, **sim), days=8))
    rng = np.random.default_rng(0)
    arrivals = {e.tx.transaction_id: e.tx.ts + float(rng.integers(0, 4 * 86400)) for e in events}
    path = tmp_path / "data.csv"
    write_labelled(path, events, reported_at=arrivals)
    meta2, rep2 = train_from_file(
        path, "file-v", tmp_path / "models", params=small, warmup_days=1, gap_days=3.0
    )
    assert meta2 is not None
    direct = [
        LabelEvent(e.tx.transaction_id, arrivals[e.tx.transaction_id], e.is_fraud) for e in events
    ]
    _, rep = train(events, "x", tmp_path, labels=direct, params=small, warmup_days=1,
                   gap_days=3.0, save=False)  # fmt: skip
    # Same data and arrival times through the file: same features, same model.
    assert rep2["metrics"]["auc_roc"] == rep["metrics"]["auc_roc"]
    assert {m.version for m in registry.list_versions(tmp_path / "models")} == {"sim-v", "file-v"}
    # The same file with a fixed label delay instead of its arrival column.
    meta3, _ = train_from_file(
        path, "file-d", tmp_path / "models", {"reported_at": "none"}, params=small,
        warmup_days=1, label_delay_days=3.0,
    )  # fmt: skip
    assert meta3 is not None
    assert meta3.training["label_delay"] == "3 days"


def test_label_events_type() -> None:
    assert LabelEvent("t", 1.0, True).is_fraud
