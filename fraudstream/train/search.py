"""XGBoost fitting and a small hyper-parameter search on time-ordered folds.

Folds never look back in time: the fit period is cut into ``folds + 2`` chunks of equal row
count; fold i trains on chunks ``[0, i + 2)`` (minus a gap of ``gap_s`` before the next chunk,
whose labels a model deployed then could not have known) and is scored on chunk ``i + 2``. Each
configuration is fitted once per fold with the most trees asked for and scored at every tree
count of ``TREE_COUNTS`` (``iteration_range``), so the number of trees is chosen on the folds,
never by early stopping on a small slice. The best configuration has the highest mean average
precision over the folds (the metric that is hardest to move; AUC breaks ties).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xgboost as xgb

from fraudstream.core import quality
from fraudstream.core.features import FEATURE_NAMES

CLASS_WEIGHTS = ("none", "sqrt", "balanced")
TREE_COUNTS = (100, 200, 400, 700)


@dataclass(frozen=True, slots=True)
class Params:
    """What a model is fitted with (the saved metadata records it)."""

    n_trees: int = 400
    max_depth: int = 5
    learning_rate: float = 0.05
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    # scale_pos_weight 1, sqrt(neg/pos) or neg/pos. "none" (calibrated scores) was as good as or
    # better than the others on the Handbook's July folds and two simulated worlds
    # (docs/model-quality.md).
    class_weight: str = "none"
    seed: int = 0
    monotone: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight}"
            )
        unknown = set(self.monotone) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"monotone constraints on unknown features {sorted(unknown)}")
        if self.n_trees < 1 or self.max_depth < 1 or not 0 < self.learning_rate <= 1:
            raise ValueError(f"bad parameters {self}")

    def scale_pos_weight(self, y: np.ndarray) -> float:
        pos = max(int(np.asarray(y, dtype=bool).sum()), 1)
        ratio = (len(y) - pos) / pos
        return {"none": 1.0, "sqrt": math.sqrt(ratio), "balanced": ratio}[self.class_weight]

    def xgb_params(self, y: np.ndarray, nthread: int) -> dict[str, Any]:
        p: dict[str, Any] = {
            "objective": "binary:logistic",
            "eval_metric": "aucpr",
            "tree_method": "hist",
            "max_bin": 256,
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "scale_pos_weight": self.scale_pos_weight(y),
            "seed": self.seed,
            "nthread": nthread,
        }
        if self.monotone:
            p["monotone_constraints"] = (
                "(" + ",".join(str(self.monotone.get(f, 0)) for f in FEATURE_NAMES) + ")"
            )
        return p

    def record(self) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "class_weight": self.class_weight,
            "seed": self.seed,
            "monotone_constraints": dict(self.monotone),
            "early_stopping": "none (trees fixed, or chosen on time-ordered folds)",
        }


def fit(X: np.ndarray, y: np.ndarray, params: Params, nthread: int = 0) -> xgb.Booster:
    dm = xgb.DMatrix(X, label=y, feature_names=list(FEATURE_NAMES), nthread=nthread)
    booster = xgb.train(params.xgb_params(y, nthread), dm, num_boost_round=params.n_trees)
    booster.feature_names = list(FEATURE_NAMES)
    return booster


def predict(booster: xgb.Booster, X: np.ndarray, n_trees: int | None = None) -> np.ndarray:
    rng = (0, n_trees) if n_trees else (0, 0)
    out = booster.inplace_predict(X, iteration_range=rng, validate_features=False)
    return np.asarray(out, dtype=np.float64)


def folds(
    ts: np.ndarray, lo: int, hi: int, n_folds: int, gap_s: float
) -> list[tuple[slice, slice]]:
    """Expanding-window time folds over rows ``[lo, hi)`` (rows sorted by ``ts``)."""
    edges = [lo + (hi - lo) * i // (n_folds + 2) for i in range(n_folds + 3)]
    out = []
    for i in range(n_folds):
        v0, v1 = edges[i + 2], edges[i + 3]
        t_end = int(np.searchsorted(ts, ts[v0] - gap_s, side="left"))
        if t_end - lo < 100 or v1 <= v0:
            continue
        out.append((slice(lo, t_end), slice(v0, v1)))
    return out


@dataclass(slots=True)
class SearchResult:
    best: Params
    table: list[dict[str, Any]]
    folds: list[dict[str, Any]]
    seconds: float


def default_grid(base: Params) -> list[Params]:
    """Small on purpose: depth, leaf size and class weight, the choices that matter most here."""
    grid = []
    for depth in (4, 6):
        for mcw in (1.0, 10.0):
            for cw in CLASS_WEIGHTS:
                grid.append(replace(base, max_depth=depth, min_child_weight=mcw, class_weight=cw))
    return grid


def search(
    X: np.ndarray,
    y: np.ndarray,
    ts: np.ndarray,
    lo: int,
    hi: int,
    base: Params,
    *,
    n_folds: int = 3,
    gap_s: float = 0.0,
    grid: Sequence[Params] | None = None,
    tree_counts: Sequence[int] = TREE_COUNTS,
    nthread: int = 0,
    extra: Callable[[slice, np.ndarray], dict[str, float]] | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Try each configuration of ``grid`` on the time folds of rows ``[lo, hi)``; return the
    best (with its number of trees) and the whole table (mean AP / AUC per configuration and
    tree count). ``extra(val_slice, scores)`` adds metrics to a fold's row (e.g. card
    precision)."""
    t0 = time.perf_counter()
    fs = folds(ts, lo, hi, n_folds, gap_s)
    if not fs:
        raise ValueError("too little data for time-ordered folds; give more history")
    grid = list(grid or default_grid(base))
    counts = sorted(set(tree_counts))
    table: list[dict[str, Any]] = []
    fold_info = [
        {
            "train_rows": s.stop - s.start,
            "validation_rows": v.stop - v.start,
            "validation_frauds": int(y[v].sum()),
        }
        for s, v in fs
    ]
    for cfg in grid:
        per_count: dict[int, list[dict[str, float]]] = {c: [] for c in counts}
        for s, v in fs:
            booster = fit(X[s], y[s], replace(cfg, n_trees=max(counts)), nthread)
            for c in counts:
                sv = predict(booster, X[v], c)
                row = {
                    "average_precision": quality.average_precision(y[v], sv),
                    "auc_roc": quality.auc_roc(y[v], sv),
                }
                if extra is not None:
                    row.update(extra(v, sv))
                per_count[c].append(row)
        for c in counts:
            rows = per_count[c]
            entry: dict[str, Any] = {
                "max_depth": cfg.max_depth,
                "min_child_weight": cfg.min_child_weight,
                "class_weight": cfg.class_weight,
                "learning_rate": cfg.learning_rate,
                "n_trees": c,
            }
            for key in rows[0]:
                entry[key] = float(np.mean([r[key] for r in rows]))
                entry[key + "_per_fold"] = [round(r[key], 4) for r in rows]
            table.append(entry)
        if log is not None:
            best_c = max(table[-len(counts) :], key=lambda e: e["average_precision"])
            log(
                f"search: depth {cfg.max_depth} mcw {cfg.min_child_weight:g} "
                f"{cfg.class_weight:8s} best at {best_c['n_trees']} trees: "
                f"AP {best_c['average_precision']:.4f} AUC {best_c['auc_roc']:.4f}"
            )
    top = max(table, key=lambda e: (e["average_precision"], e["auc_roc"]))
    best = replace(
        base,
        max_depth=top["max_depth"],
        min_child_weight=top["min_child_weight"],
        class_weight=top["class_weight"],
        n_trees=top["n_trees"],
    )
    return SearchResult(best, table, fold_info, time.perf_counter() - t0)
