"""Model versions on disk, checked before anything is loaded.

Layout::

    models/<version>/model.ubj        XGBoost UBJ (or model.json); never pickle
    models/<version>/metadata.json    see ModelMeta
    models/MANIFEST.json              versions and the sha256 of their model files (informative)

A version is written once (:func:`save_version` refuses to overwrite) and refused at load when the
file is missing, a pickle, altered (sha256), corrupt, or built for other features than the code's
:data:`~fraudstream.core.features.FEATURE_NAMES` /
:data:`~fraudstream.core.features.FEATURE_SET_VERSION`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import xgboost as xgb

from fraudstream.core.features import FEATURE_NAMES, FEATURE_SET_VERSION
from fraudstream.core.forest import Forest
from fraudstream.errors import ModelError

METADATA_FILE = "metadata.json"
MANIFEST_FILE = "MANIFEST.json"
MODEL_FILES = ("model.ubj", "model.json")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck", ".sav")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ModelMeta:
    version: str
    created_at: str
    feature_set_version: str
    feature_names: tuple[str, ...]
    thresholds: Mapping[str, float]  # {"review": r, "decline": d}, r <= d
    threshold_rule: str
    training: Mapping[str, Any]  # rows, frauds, period, source, …
    metrics: Mapping[str, Any]  # auc_roc, average_precision, precision_at_k, …
    model_file: str
    sha256: str
    xgboost_version: str
    n_trees: int
    notes: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def review_threshold(self) -> float:
        return float(self.thresholds["review"])

    @property
    def decline_threshold(self) -> float:
        return float(self.thresholds["decline"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_names"] = list(self.feature_names)
        d["thresholds"] = dict(self.thresholds)
        d["training"] = dict(self.training)
        d["metrics"] = dict(self.metrics)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        try:
            thresholds = {k: float(v) for k, v in d["thresholds"].items()}
            if not {"review", "decline"} <= thresholds.keys():
                raise KeyError("thresholds.review / thresholds.decline")
            return cls(
                version=str(d["version"]),
                created_at=str(d["created_at"]),
                feature_set_version=str(d["feature_set_version"]),
                feature_names=tuple(str(x) for x in d["feature_names"]),
                thresholds=thresholds,
                threshold_rule=str(d.get("threshold_rule", "")),
                training=dict(d.get("training", {})),
                metrics=dict(d.get("metrics", {})),
                model_file=str(d["model_file"]),
                sha256=str(d["sha256"]),
                xgboost_version=str(d.get("xgboost_version", "")),
                n_trees=int(d.get("n_trees", 0)),
                notes=str(d.get("notes", "")),
                params=dict(d.get("params", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"metadata is incomplete or malformed ({exc!r})") from exc


# Batches up to this many rows × trees are scored by ``Forest`` (a few rows cost XGBoost
# ~250-450 µs a call before any row; Forest ~60-100 µs); larger ones by XGBoost, which is faster
# per row. Both give the same scores to the bit.
FOREST_MAX_ROW_TREES = 4096
# How reasons attribute a score to features (FRAUD_REASONS_METHOD): "path" credits each split on
# the row's path with the change of the node mean (Saabas; XGBoost's approx_contribs); "shap" is
# exact TreeSHAP, whose cost grows with every leaf: 10-200x the CPU per flagged row.
ReasonsMethod = Literal["path", "shap"]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model, ready to score. One XGBoost thread: one per worker process."""

    meta: ModelMeta
    booster: xgb.Booster
    forest: Forest | None = None

    @property
    def version(self) -> str:
        return self.meta.version

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Fraud scores (0-1) for the rows of ``X`` (columns in FEATURE_NAMES order)."""
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        forest = self.forest
        if forest is not None and X.shape[0] * forest.n_trees <= FOREST_MAX_ROW_TREES:
            return np.asarray(forest.predict(X), dtype=np.float64)
        # Feature names were checked once at load; skipping the per-call check is the point.
        out = self.booster.inplace_predict(X, validate_features=False)
        return np.asarray(out, dtype=np.float64).reshape(X.shape[0])

    def contributions(self, X: np.ndarray, method: ReasonsMethod = "path") -> np.ndarray:
        """Log-odds contributions ``(n, len(features) + 1)``, the last column the bias; each row
        sums to the row's margin. ``method``: see :data:`ReasonsMethod`."""
        if X.shape[0] == 0:
            return np.zeros((0, X.shape[1] + 1), dtype=np.float64)
        path = method == "path"
        if path and self.forest is not None:
            # Always Forest, whatever the batch, so that a row's reasons never depend on its
            # batch: 0.1-0.3 ms for one row against XGBoost's 0.6-2.6 ms, alike for 200 rows.
            return np.asarray(self.forest.contributions(X), dtype=np.float64)
        # nthread=1: by default a DMatrix starts an OpenMP team of every core, whose threads
        # then spin between calls (~20 % of a core at 1,000 transactions a second).
        dm = xgb.DMatrix(X, feature_names=list(self.meta.feature_names), nthread=1)
        out = self.booster.predict(dm, pred_contribs=True, approx_contribs=path)
        return np.asarray(out, dtype=np.float64)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_version_name(version: str) -> None:
    if not _VERSION_RE.match(version):
        raise ModelError(
            f"model version {version!r} is not a valid name: use letters, digits, '.', '_' "
            "or '-', at most 64 characters, starting with a letter or digit"
        )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o644)  # mkstemp makes 0600; workers may run as another user
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_version(
    models_dir: Path | str,
    version: str,
    booster: xgb.Booster,
    thresholds: Mapping[str, float],
    rule: str,
    summary: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    notes: str = "",
    params: Mapping[str, Any] | None = None,
    fmt: str = "ubj",
    created_at: str | None = None,
) -> ModelMeta:
    """Write a new version (model file + metadata) and update the manifest.

    Refuses to overwrite an existing version: versions are immutable so a score can always be
    traced to the exact model that produced it.
    """
    _check_version_name(version)
    if fmt not in ("ubj", "json"):
        raise ModelError(f"model format {fmt!r} is not supported: use 'ubj' or 'json'")
    review, decline = float(thresholds["review"]), float(thresholds["decline"])
    if not 0.0 <= review <= decline <= 1.0:
        raise ModelError(f"thresholds must satisfy 0 <= review <= decline <= 1, got {thresholds}")
    names = booster.feature_names
    if names is None or tuple(names) != FEATURE_NAMES:
        raise ModelError(
            "the booster's feature_names are not the code's FEATURE_NAMES: train with "
            "xgb.DMatrix(X, feature_names=list(FEATURE_NAMES))"
        )
    root = Path(models_dir)
    folder = root / version
    if folder.exists():
        raise ModelError(
            f"model version {version!r} already exists in {root}: versions are immutable, "
            "choose a new version name"
        )
    root.mkdir(parents=True, exist_ok=True)
    # Build in a hidden temporary folder and rename it into place: no half-written versions.
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{version}."))
    try:
        model_file = f"model.{fmt}"
        booster.save_model(str(tmp / model_file))
        meta = ModelMeta(
            version=version,
            created_at=created_at or datetime.now(UTC).isoformat(timespec="seconds"),
            feature_set_version=FEATURE_SET_VERSION,
            feature_names=FEATURE_NAMES,
            thresholds={"review": review, "decline": decline},
            threshold_rule=rule,
            training=dict(summary),
            metrics=dict(metrics),
            model_file=model_file,
            sha256=sha256_file(tmp / model_file),
            xgboost_version=xgb.__version__,
            n_trees=booster.num_boosted_rounds(),
            notes=notes,
            params=dict(params or {}),
        )
        _write_atomic(
            tmp / METADATA_FILE, orjson.dumps(meta.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"
        )
        (tmp / model_file).chmod(0o644)
        tmp.chmod(0o755)  # mkdtemp makes 0700
        tmp.rename(folder)
    except BaseException:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
        raise
    write_manifest(root)
    return meta


def write_manifest(models_dir: Path | str) -> None:
    """Rewrite MANIFEST.json from the folders (informative; load never trusts it)."""
    root = Path(models_dir)
    entries = []
    for meta in list_versions(root):
        entries.append(
            {
                "version": meta.version,
                "created_at": meta.created_at,
                "model_file": meta.model_file,
                "sha256": meta.sha256,
                "feature_set_version": meta.feature_set_version,
            }
        )
    body = {"versions": entries}
    _write_atomic(root / MANIFEST_FILE, orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


def _read_meta(folder: Path) -> ModelMeta:
    path = folder / METADATA_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing: this folder is not a model version")
    try:
        raw = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path} is not a JSON object")
    try:
        return ModelMeta.from_dict(raw)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def require_registry(models_dir: Path | str) -> Path:
    """``models_dir`` as a Path, or a ModelError saying which folder is missing and what to do
    (a wheel installed with pip carries no models: the registry is configured, not bundled)."""
    root = Path(models_dir)
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise ModelError(
            f"the model registry {str(root)!r}{where} does not exist. Point FRAUD_MODELS_DIR at "
            "your registry folder, or create one there with `fraudstream train --version "
            "champion-v1` (a source checkout also has example versions in its models/)"
        )
    return root


def list_versions(models_dir: Path | str) -> list[ModelMeta]:
    """The versions whose metadata can be read, oldest first (by created_at, then name)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    metas = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            metas.append(_read_meta(folder))
        except ModelError:
            continue  # `verify` reports it; listing shows what is usable
    return sorted(metas, key=lambda m: (m.created_at, m.version))


def _looks_pickled(path: Path, head: bytes) -> bool:
    # Pickle protocols 2+ start with PROTO (0x80); XGBoost JSON and UBJ both start with '{'.
    return path.suffix.lower() in _PICKLE_SUFFIXES or head[:1] == b"\x80"


def _check_files(
    models_dir: Path | str, version: str, expected_features: Sequence[str]
) -> tuple[ModelMeta, Path]:
    """Every check that needs no deserialisation; raises ModelError on the first problem."""
    _check_version_name(version)
    root = require_registry(models_dir)
    folder = root / version
    if not folder.is_dir():
        known = ", ".join(m.version for m in list_versions(root)) or "none"
        raise ModelError(
            f"model version {version!r} not found in {root} (known: {known}); train it with "
            "`fraudstream train` or point FRAUD_MODELS_DIR at the right folder"
        )
    pickles = sorted(
        p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES and p.is_file()
    )
    if pickles:
        raise ModelError(
            f"model version {version!r} contains pickle files ({', '.join(pickles)}): pickles "
            "can run arbitrary code and are never loaded; re-export the model with "
            "booster.save_model('model.ubj')"
        )
    meta = _read_meta(folder)
    if meta.version != version:
        raise ModelError(
            f"{folder / METADATA_FILE} declares version {meta.version!r}, not {version!r}: the "
            "folder was renamed or copied; restore it or re-register the model"
        )
    model_path = folder / meta.model_file
    if meta.model_file not in MODEL_FILES:
        raise ModelError(
            f"model file {meta.model_file!r} is not an XGBoost JSON/UBJ file name "
            f"({' or '.join(MODEL_FILES)}); only those formats are loaded"
        )
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} is missing; restore it or retrain the version")
    with model_path.open("rb") as f:
        head = f.read(16)
    if _looks_pickled(model_path, head):
        raise ModelError(
            f"{model_path} is a pickle, not an XGBoost JSON/UBJ model: pickles can run "
            "arbitrary code and are refused without being opened; re-export with "
            "booster.save_model('model.ubj')"
        )
    if head[:1] != b"{":
        raise ModelError(
            f"{model_path} is not an XGBoost JSON/UBJ model (unexpected first bytes "
            f"{head[:4]!r}); re-export it with booster.save_model"
        )
    digest = sha256_file(model_path)
    if digest != meta.sha256:
        raise ModelError(
            f"{model_path} does not match its metadata: sha256 {digest[:16]}… instead of "
            f"{meta.sha256[:16]}…; the file was altered or damaged — restore it or retrain"
        )
    if meta.feature_set_version != FEATURE_SET_VERSION:
        raise ModelError(
            f"model {version!r} was trained on feature set {meta.feature_set_version!r} but this "
            f"code computes {FEATURE_SET_VERSION!r} (fs2 added merchant, label and 30-day card "
            "features an fs1 model never saw, so it cannot score them); retrain it with this "
            "version of fraudstream (`fraudstream train`; the shipped versions: `python -m "
            "fraudstream.train.ship --force`)"
        )
    _compare_names(version, "metadata", meta.feature_names, expected_features)
    return meta, model_path


def _compare_names(
    version: str, where: str, got: Sequence[str] | None, expected: Sequence[str]
) -> None:
    if got is None or tuple(got) != tuple(expected):
        got_t = tuple(got or ())
        missing = [n for n in expected if n not in got_t]
        extra = [n for n in got_t if n not in expected]
        detail = (
            f"missing {missing}, unexpected {extra}"
            if missing or extra
            else "same names in another order"
        )
        raise ModelError(
            f"model {version!r}: the feature names in its {where} differ from the feature code "
            f"({detail}); retrain the model with this version of fraudstream"
        )


_UBJ_FIXED = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8, b"d": 4, b"D": 8, b"C": 1}
_UBJ_EMPTY = {b"Z", b"N", b"T", b"F"}


def structure_problem(data: bytes, suffix: str) -> str | None:
    """None when ``data`` is one complete JSON (``.json``) or UBJSON (``.ubj``) document."""
    if suffix == ".json":
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return f"invalid JSON: {exc}"
        return None
    try:
        end = _ubj_value(data, 0, None)
    except (IndexError, ValueError) as exc:
        return f"invalid UBJSON: {exc}"
    if end != len(data):
        return f"invalid UBJSON: {len(data) - end} trailing bytes"
    return None


def _ubj_int(data: bytes, pos: int) -> tuple[int, int]:
    marker = data[pos : pos + 1]
    size = _UBJ_FIXED.get(marker)
    if marker not in (b"i", b"U", b"I", b"l", b"L") or size is None:
        raise ValueError(f"expected a length at byte {pos}, found {marker!r}")
    raw = data[pos + 1 : pos + 1 + size]
    if len(raw) != size:
        raise ValueError(f"length cut short at byte {pos}")
    value = int.from_bytes(raw, "big", signed=marker != b"U")
    if value < 0:
        raise ValueError(f"negative length at byte {pos}")
    return value, pos + 1 + size


def _ubj_value(data: bytes, pos: int, marker: bytes | None) -> int:
    """Skip one value starting at ``pos`` (its marker already known if ``marker``); return
    the position after it, or raise when the document ends too early or is malformed."""
    if marker is None:
        marker = data[pos : pos + 1]
        pos += 1
    if not marker:
        raise ValueError("document ends too early")
    if marker in _UBJ_EMPTY:
        return pos
    if marker in _UBJ_FIXED:
        end = pos + _UBJ_FIXED[marker]
        if end > len(data):
            raise ValueError("number cut short")
        return end
    if marker in (b"S", b"H"):
        n, pos = _ubj_int(data, pos)
        if pos + n > len(data):
            raise ValueError("string cut short")
        return pos + n
    if marker in (b"[", b"{"):
        is_object = marker == b"{"
        closing = b"}" if is_object else b"]"
        typed: bytes | None = None
        if data[pos : pos + 1] == b"$":
            typed = data[pos + 1 : pos + 2]
            pos += 2
        count: int | None = None
        if data[pos : pos + 1] == b"#":
            count, pos = _ubj_int(data, pos + 1)
        elif typed is not None:
            raise ValueError("typed container without a count")
        if count is not None and typed in _UBJ_FIXED and not is_object:
            end = pos + count * _UBJ_FIXED[typed]
            if end > len(data):
                raise ValueError("typed array cut short")
            return end
        i = 0
        while True:
            if count is None:
                if pos >= len(data):
                    raise ValueError("container not closed")
                if data[pos : pos + 1] == closing:
                    return pos + 1
            elif i >= count:
                return pos
            if is_object:
                n, pos = _ubj_int(data, pos)
                pos += n
            pos = _ubj_value(data, pos, typed)
            i += 1
    raise ValueError(f"unknown marker {marker!r} at byte {pos - 1}")


def load(
    models_dir: Path | str, version: str, expected_features: Sequence[str] = FEATURE_NAMES
) -> LoadedModel:
    """Verify and load one version; raises ModelError saying what is wrong and what to do."""
    meta, model_path = _check_files(models_dir, version, expected_features)
    data = model_path.read_bytes()
    # XGBoost's own parser can crash the process (SIGSEGV) on a truncated UBJ file instead of
    # raising, so the structure is checked here first, in Python, and refused cleanly.
    problem = structure_problem(data, model_path.suffix)
    if problem:
        raise ModelError(
            f"{model_path} is not a complete XGBoost {model_path.suffix[1:].upper()} document "
            f"({problem}); it is truncated or corrupt — restore the file or retrain the version"
        )
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{model_path} cannot be read by XGBoost {xgb.__version__} (truncated or corrupt: "
            f"{first[:200]}); restore the file or retrain the version"
        ) from exc
    _compare_names(version, "model file", booster.feature_names, expected_features)
    if booster.num_boosted_rounds() != meta.n_trees:
        raise ModelError(
            f"model {version!r} has {booster.num_boosted_rounds()} boosting rounds but its "
            f"metadata says {meta.n_trees}; the files do not belong together — retrain"
        )
    booster.set_param({"nthread": 1})
    return LoadedModel(
        meta=meta, booster=booster, forest=Forest.from_json(bytes(booster.save_raw("json")))
    )


def verify(
    models_dir: Path | str, version: str, expected_features: Sequence[str] = FEATURE_NAMES
) -> list[str]:
    """Problems with a version (empty list = it loads and scores a probe row)."""
    try:
        model = load(models_dir, version, expected_features)
        probe = model.predict(np.zeros((1, len(expected_features)), dtype=np.float32))
    except ModelError as exc:
        return [str(exc)]
    problems = []
    if not np.all(np.isfinite(probe)) or not 0.0 <= float(probe[0]) <= 1.0:
        problems.append(f"model {version!r} scores a probe row as {probe!r}, not a probability")
    return problems
