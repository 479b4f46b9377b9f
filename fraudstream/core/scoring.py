"""A batch of feature rows → scores per model version, one XGBoost call per version."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fraudstream.core.features import N_FEATURES
from fraudstream.core.registry import LoadedModel
from fraudstream.errors import ModelError


def nonfinite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean mask of rows with a NaN or infinite feature (the caller dead-letters them)."""
    if X.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return ~np.isfinite(X).all(axis=1)


def as_matrix(rows: list[list[float]]) -> np.ndarray:
    """Feature rows → the float32, C-contiguous matrix XGBoost predicts from without a copy."""
    if not rows:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)


def score_batch(
    models: Mapping[str, LoadedModel], X: np.ndarray, wanted: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Score the rows each version needs, in one ``inplace_predict`` per version.

    ``wanted[version]`` is a boolean mask over the rows of ``X``. Returns, for every version in
    ``wanted``, a float64 array as long as ``X``: the score where the mask is true, NaN elsewhere
    (so callers index results by row). A version without wanted rows is not called at all.
    Rows must be finite: filter them with :func:`nonfinite_rows` first.
    """
    n = X.shape[0]
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"feature matrix must be (n, {N_FEATURES}), got {X.shape}")
    out: dict[str, np.ndarray] = {}
    for version, wanted_rows in wanted.items():
        model = models.get(version)
        if model is None:
            raise ModelError(
                f"model version {version!r} is routed to but not loaded (loaded: "
                f"{', '.join(sorted(models)) or 'none'}); load it before routing to it"
            )
        mask = np.asarray(wanted_rows, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"mask for {version!r} has shape {mask.shape}, expected ({n},)")
        scores = np.full(n, np.nan, dtype=np.float64)
        if mask.all():
            scores[:] = model.predict(X)
        elif mask.any():
            scores[mask] = model.predict(np.ascontiguousarray(X[mask]))
        out[version] = scores
    return out
