"""The guard in front of the models: rows with a feature that came out NaN or infinite."""

from __future__ import annotations

import numpy as np


def nonfinite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean mask of rows with a NaN or infinite feature (the caller dead-letters them)."""
    if X.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return ~np.isfinite(X).all(axis=1)
