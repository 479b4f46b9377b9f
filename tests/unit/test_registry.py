"""The model registry: save, list, verify, load — and refusing every kind of bad model file."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import xgboost as xgb

from fraudstream.core import registry
from fraudstream.core.features import FEATURE_NAMES, N_FEATURES
from fraudstream.core.scoring import nonfinite_rows
from fraudstream.errors import ModelError

THRESHOLDS = {"review": 0.5, "decline": 0.9}


def _booster(names: list[str] | None = None, rounds: int = 8) -> xgb.Booster:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 12] > 0.8).astype(np.float32)
    dm = xgb.DMatrix(X, label=y, feature_names=names or list(FEATURE_NAMES))
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0}
    return xgb.train(params, dm, num_boost_round=rounds)


def _save(
    root: Path, version: str = "v1", booster: xgb.Booster | None = None
) -> registry.ModelMeta:
    return registry.save_version(
        root,
        version,
        booster or _booster(),
        THRESHOLDS,
        "test rule",
        {"rows": 400, "frauds": 50, "source": "test"},
        {"auc_roc": 0.9},
        notes="unit test",
    )


@pytest.fixture
def models(tmp_path: Path) -> Path:
    _save(tmp_path)
    return tmp_path


def test_save_list_load_verify(models: Path) -> None:
    meta = registry.list_versions(models)[0]
    assert meta.version == "v1"
    assert meta.feature_names == FEATURE_NAMES
    assert meta.model_file == "model.ubj"
    assert meta.n_trees == 8
    assert meta.thresholds == THRESHOLDS
    assert meta.xgboost_version == xgb.__version__
    assert len(meta.sha256) == 64
    stored = orjson.loads((models / "v1" / "metadata.json").read_bytes())
    assert stored["threshold_rule"] == "test rule"
    assert stored["training"]["source"] == "test"
    manifest = orjson.loads((models / "MANIFEST.json").read_bytes())
    assert manifest["versions"][0]["sha256"] == meta.sha256
    assert registry.verify(models, "v1") == []

    model = registry.load(models, "v1")
    X = np.random.default_rng(1).normal(size=(7, N_FEATURES)).astype(np.float32)
    p = model.predict(X)
    assert p.shape == (7,)
    assert ((p >= 0) & (p <= 1)).all()
    contrib = model.contributions(X)
    assert contrib.shape == (7, N_FEATURES + 1)
    # Contributions add up to the margin.
    margin = model.booster.predict(
        xgb.DMatrix(X, feature_names=list(FEATURE_NAMES)), output_margin=True
    )
    assert np.allclose(contrib.sum(axis=1), margin, atol=1e-4)
    exact = model.contributions(X, "shap")  # TreeSHAP: other attributions, the same sums
    dm = xgb.DMatrix(X, feature_names=list(FEATURE_NAMES), nthread=1)
    np.testing.assert_array_equal(exact, model.booster.predict(dm, pred_contribs=True))
    assert np.allclose(exact.sum(axis=1), margin, atol=1e-4)
    assert not np.allclose(exact, contrib, atol=1e-3)
    assert model.contributions(np.zeros((0, N_FEATURES), np.float32)).shape == (0, N_FEATURES + 1)
    assert model.predict(np.zeros((0, N_FEATURES), np.float32)).shape == (0,)


def test_versions_are_immutable(models: Path) -> None:
    with pytest.raises(ModelError, match="already exists"):
        _save(models)
    with pytest.raises(ModelError, match="not a valid name"):
        _save(models, "../escape")


def test_json_format_and_listing_order(tmp_path: Path) -> None:
    registry.save_version(tmp_path, "a-json", _booster(), THRESHOLDS, "r", {}, {}, fmt="json")
    assert registry.load(tmp_path, "a-json").meta.model_file == "model.json"
    assert (tmp_path / "a-json" / "model.json").read_bytes()[:1] == b"{"


def _expect(models: Path, match: str) -> None:
    problems = registry.verify(models, "v1")
    assert len(problems) == 1
    assert re.search(match, problems[0]), problems[0]
    with pytest.raises(ModelError, match=match):
        registry.load(models, "v1")


def test_missing_version_and_files(models: Path) -> None:
    with pytest.raises(ModelError, match=r"'nope' not found .*known: v1"):
        registry.load(models, "nope")
    (models / "v1" / "model.ubj").unlink()
    _expect(models, "model file .* is missing")
    (models / "v1" / "metadata.json").unlink()
    _expect(models, "metadata.json is missing")


def test_truncated_model_is_refused(models: Path) -> None:
    path = models / "v1" / "model.ubj"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect(models, "sha256")  # caught before XGBoost opens it
    _fix_sha(models)
    _expect(models, "truncated or corrupt")


def test_bit_flip_is_refused(models: Path) -> None:
    path = models / "v1" / "model.ubj"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _expect(models, r"sha256 .* instead of .*altered or damaged")


def test_sha_mismatch_in_metadata_is_refused(models: Path) -> None:
    meta_path = models / "v1" / "metadata.json"
    meta = orjson.loads(meta_path.read_bytes())
    meta["sha256"] = "0" * 64
    meta_path.write_bytes(orjson.dumps(meta))
    _expect(models, "does not match its metadata")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))  # harmless, and never executed: we never unpickle


def test_pickle_named_model_ubj_is_refused_without_loading(models: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = models / "v1" / "model.ubj"
    path.write_bytes(pickle.dumps(_Evil(), protocol=4))
    _fix_sha(models)
    _expect(models, "is a pickle.*refused without being opened")
    assert "unpickled!" not in capsys.readouterr().out


def test_pkl_file_in_the_version_is_refused(models: Path) -> None:
    (models / "v1" / "model.pkl").write_bytes(pickle.dumps({"not": "a model"}))
    _expect(models, r"contains pickle files \(model.pkl\)")


def test_pickle_declared_as_model_file_is_refused(models: Path) -> None:
    meta_path = models / "v1" / "metadata.json"
    meta = orjson.loads(meta_path.read_bytes())
    shutil.move(models / "v1" / "model.ubj", models / "v1" / "model.bin")
    meta["model_file"] = "model.bin"
    meta_path.write_bytes(orjson.dumps(meta))
    _expect(models, "not an XGBoost JSON/UBJ file name")


def test_not_a_model_is_refused(models: Path) -> None:
    (models / "v1" / "model.ubj").write_bytes(b"PK\x03\x04 zip file")
    _fix_sha(models)
    _expect(models, "not an XGBoost JSON/UBJ model")


def test_wrong_feature_names_are_refused(tmp_path: Path) -> None:
    other = list(FEATURE_NAMES)
    other[0], other[1] = other[1], other[0]
    with pytest.raises(ModelError, match="feature_names are not the code's FEATURE_NAMES"):
        _save(tmp_path, booster=_booster(other))
    # A model file with other names behind metadata claiming the right ones.
    _save(tmp_path)
    _booster(other).save_model(str(tmp_path / "v1" / "model.ubj"))
    _fix_sha(tmp_path)
    _expect(tmp_path, "in its model file differ .*another order")
    # Code whose features changed since the model was trained.
    expected = (*FEATURE_NAMES[:-1], "brand_new_feature")
    with pytest.raises(ModelError, match=r"missing \['brand_new_feature'\]"):
        registry.load(tmp_path, "v1", expected_features=expected)


def test_feature_set_version_mismatch_is_refused(models: Path) -> None:
    meta_path = models / "v1" / "metadata.json"
    meta = orjson.loads(meta_path.read_bytes())
    meta["feature_set_version"] = "fs0"
    meta_path.write_bytes(orjson.dumps(meta))
    _expect(models, "feature set 'fs0'.*retrain")
    # A model of the previous feature set is refused with what to do (it cannot score fs2 rows).
    meta["feature_set_version"] = "fs1"
    meta_path.write_bytes(orjson.dumps(meta))
    _expect(models, "feature set 'fs1' but this code computes 'fs2'.*train.ship --force")


def test_broken_metadata_is_refused(models: Path) -> None:
    (models / "v1" / "metadata.json").write_text("{not json")
    _expect(models, "not valid JSON")
    (models / "v1" / "metadata.json").write_text('{"version": "v1"}')
    _expect(models, "incomplete or malformed")
    assert registry.list_versions(models) == []


def _fix_sha(root: Path) -> None:
    """Make the metadata agree with the (damaged) file, to reach the checks after the hash."""
    meta_path = root / "v1" / "metadata.json"
    meta = orjson.loads(meta_path.read_bytes())
    meta["sha256"] = registry.sha256_file(root / "v1" / meta["model_file"])
    meta_path.write_bytes(orjson.dumps(meta))


def test_nonfinite_rows() -> None:
    X = np.zeros((4, N_FEATURES))
    X[1, 3] = np.nan
    X[3, 0] = np.inf
    assert nonfinite_rows(X).tolist() == [False, True, False, True]
    assert nonfinite_rows(np.zeros((0, N_FEATURES))).shape == (0,)
