"""The numpy evaluator gives XGBoost's scores to the bit, so that a transaction's score never
depends on how many others shared its batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from fraudstream.core import features, registry
from fraudstream.core.entity import nothing_known
from fraudstream.core.forest import Forest
from fraudstream.sim.generator import SimConfig, generate

REPO = Path(__file__).resolve().parents[2]


def _rows(n: int, seed: int) -> np.ndarray:
    gen = generate(SimConfig(seed=seed), n=None)
    states: dict[str, features.CardState] = {}
    rows = []
    for _ in range(n):
        tx = next(gen).tx
        states[tx.card_id], row = features.step(states.get(tx.card_id), tx, nothing_known)
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def _odd_rows(n: int, seed: int) -> np.ndarray:
    """Values far from the training data, and missing values in several features."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, features.N_FEATURES)) * rng.choice([1, 10, 1e3, 1e5], features.N_FEATURES)
    x = x.astype(np.float32)
    x[::5, 3] = np.nan
    x[::7, 0] = np.nan
    x[::3, 12] = np.nan
    return x


def _same(forest: Forest, booster: xgb.Booster, x: np.ndarray) -> None:
    margin = booster.inplace_predict(x, validate_features=False, predict_type="margin")
    prob = booster.inplace_predict(x, validate_features=False)
    np.testing.assert_array_equal(forest.margins(x), margin)
    np.testing.assert_array_equal(forest.predict(x), prob)


@pytest.mark.parametrize("version", ["champion-v1", "challenger-v2"])
def test_shipped_models_score_alike_to_the_bit(version: str) -> None:
    model = registry.load(REPO / "models", version)
    assert model.forest is not None
    _same(model.forest, model.booster, _rows(20_000, seed=3))
    _same(model.forest, model.booster, _odd_rows(20_000, seed=4))


def _trained_with_missing_values(
    seed: int, base_score: float
) -> tuple[np.ndarray, xgb.Booster, Forest]:
    """NaNs in training give splits whose default goes left and others right."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0.5)).astype(int)
    x[rng.random(x.shape) < 0.2] = np.nan
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 5, "nthread": 1, "base_score": base_score},
        xgb.DMatrix(x, label=y),
        num_boost_round=25,
    )
    forest = Forest.from_json(bytes(booster.save_raw("json")))
    assert forest is not None
    return x, booster, forest


def test_a_model_trained_with_missing_values_scores_alike() -> None:
    x, booster, forest = _trained_with_missing_values(1, 0.1234)
    rng = np.random.default_rng(1)
    assert forest.default_left.any()
    assert (~forest.default_left).any()
    _same(forest, booster, x)
    _same(forest, booster, rng.normal(size=(500, 6)).astype(np.float32) * 10)


def test_what_it_cannot_evaluate_is_left_to_xgboost() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    softmax = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=3,
    )
    assert Forest.from_json(bytes(softmax.save_raw("json"))) is None
    forest_of_trees = xgb.train(
        {"objective": "binary:logistic", "num_parallel_tree": 3, "nthread": 1},
        xgb.DMatrix(x, label=y > 0),
        num_boost_round=2,
    )
    assert Forest.from_json(bytes(forest_of_trees.save_raw("json"))) is None


def test_a_transaction_scores_the_same_alone_and_in_a_large_batch() -> None:
    model = registry.load(REPO / "models", "challenger-v2")
    x = _rows(2000, seed=9)
    assert x.shape[0] * model.forest.n_trees > registry.FOREST_MAX_ROW_TREES  # type: ignore[union-attr]
    together = model.predict(x)  # XGBoost
    alone = np.concatenate([model.predict(x[i : i + 1]) for i in range(200)])  # Forest
    np.testing.assert_array_equal(alone, together[:200])


def test_rows_of_the_wrong_width_are_refused() -> None:
    model = registry.load(REPO / "models", "champion-v1")
    assert model.forest is not None
    with pytest.raises(ValueError, match="the model takes"):
        model.forest.predict(np.zeros((2, features.N_FEATURES - 1), dtype=np.float32))


def _approx(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    dm = xgb.DMatrix(x, feature_names=booster.feature_names, nthread=1)
    return np.asarray(booster.predict(dm, pred_contribs=True, approx_contribs=True))


@pytest.mark.parametrize("version", ["champion-v1", "challenger-v2"])
def test_path_attributions_are_xgboosts_approximate_contributions(version: str) -> None:
    model = registry.load(REPO / "models", version)
    assert model.forest is not None
    for x in (_rows(2000, seed=5), _odd_rows(2000, seed=6)):
        got = model.forest.contributions(x)
        want = _approx(model.booster, x)
        # The bias column to the bit; each feature's sum to a few float32 ulps (it adds in
        # float64, XGBoost in float32 tree by tree).
        np.testing.assert_array_equal(got[:, -1], want[:, -1])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        margins = model.forest.margins(x).astype(np.float64)
        np.testing.assert_allclose(got.sum(axis=1, dtype=np.float64), margins, atol=1e-4)


def test_path_attributions_with_missing_values_follow_the_default_direction() -> None:
    x, booster, forest = _trained_with_missing_values(7, 0.3)
    np.testing.assert_allclose(forest.contributions(x), _approx(booster, x), rtol=0, atol=1e-5)


def test_a_transactions_reasons_are_the_same_alone_and_in_a_large_batch() -> None:
    model = registry.load(REPO / "models", "challenger-v2")
    x = _rows(600, seed=8)
    together = model.contributions(x)
    alone = np.concatenate([model.contributions(x[i : i + 1]) for i in range(100)])
    np.testing.assert_array_equal(alone, together[:100])
