"""Training: history → :func:`fraudstream.core.features.replay` → XGBoost → the registry.

The features come from the same ``step`` the worker runs, so there is no train/serve skew.

Splits, all by event time (never random: random splits leak a card's future into its past):

* the earliest ``warmup_days`` are replayed to build card state but not learnt from (every card
  looks new at the start of a history, which is not what the live worker sees);
* the next 75 % of the remaining rows are the *training period*; its last 15 % is held out as the
  *early-stopping set*, the first 85 % is what the trees are fitted on;
* the last 25 % is the *validation period*: untouched by fitting and early stopping, it gives the
  reported metrics and the thresholds.

Thresholds: ``review`` is the score at which 1 % of the validation transactions would be flagged
(review or decline), ``decline`` the score at which 0.2 % would be declined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from fraudstream.core import features
from fraudstream.core.features import CARD_FEATURE_SLICE, FEATURE_NAMES
from fraudstream.core.messages import Transaction
from fraudstream.core.registry import ModelMeta, save_version

REVIEW_RATE = 0.01
DECLINE_RATE = 0.002
TOP_K_SHARE = 0.005
VALIDATION_SHARE = 0.25
EARLY_STOP_SHARE = 0.15
THRESHOLD_RULE = (
    f"review = score at which {REVIEW_RATE:.1%} of validation transactions are flagged "
    f"(review or decline); decline = score at which {DECLINE_RATE:.1%} are declined"
)

LabelledTx = tuple[Transaction, bool] | tuple[Transaction, bool, str | None]


# --- metrics, by hand (no sklearn at runtime) ----------------------------------------------------


def auc_roc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). NaN without both classes."""
    y = np.asarray(y, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = np.asarray(s)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision: Σ (recall_k − recall_{k−1}) · precision_k over distinct thresholds."""
    y = np.asarray(y, dtype=bool)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(s), kind="mergesort")
    s_sorted = np.asarray(s)[order]
    y_sorted = y[order]
    tp = np.cumsum(y_sorted)
    # Evaluate only at the last index of each run of equal scores (ties share one threshold).
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp_at = tp[last]
    precision = tp_at / (last + 1)
    recall = tp_at / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_k(y: np.ndarray, s: np.ndarray, k: int) -> float:
    if k <= 0 or len(s) == 0:
        return float("nan")
    top = np.argsort(-np.asarray(s), kind="mergesort")[:k]
    return float(np.asarray(y, dtype=bool)[top].mean())


def score_at_rate(s: np.ndarray, rate: float) -> float:
    """The score at which a share ``rate`` of rows has a score ≥ it (the k-th largest)."""
    if len(s) == 0:
        return 1.0
    k = max(1, math.ceil(rate * len(s)))
    return float(np.sort(s)[::-1][k - 1])


def _at_threshold(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, float]:
    flagged = s >= thr
    tp = int((flagged & y).sum())
    n_flag = int(flagged.sum())
    pos = int(y.sum())
    return {
        "threshold": thr,
        "flag_rate": n_flag / len(s) if len(s) else 0.0,
        "precision": tp / n_flag if n_flag else float("nan"),
        "recall": tp / pos if pos else float("nan"),
    }


def evaluate(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=bool)
    k = max(1, math.ceil(TOP_K_SHARE * len(s)))
    return {
        "rows": len(s),
        "frauds": int(y.sum()),
        "auc_roc": auc_roc(y, s),
        "average_precision": average_precision(y, s),
        "precision_at_k": precision_at_k(y, s, k),
        "k": k,
    }


# --- training ------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def train(
    transactions_with_labels: Iterable[LabelledTx],
    version: str,
    models_dir: Path | str,
    *,
    use_card_state: bool = True,
    n_trees: int = 300,
    max_depth: int = 5,
    learning_rate: float = 0.1,
    seed: int = 0,
    warmup_days: float = 0.0,
    early_stopping_rounds: int = 30,
    monotone: dict[str, int] | None = None,
    source: str = "unknown",
    notes: str = "",
    save: bool = True,
    nthread: int = 0,
    extra_metrics: dict[str, Any] | None = None,
) -> tuple[ModelMeta | None, dict[str, Any]]:
    """Train one version; save it when ``save`` (the default) and return (meta, report).

    ``use_card_state=False`` is the stateless ablation: the card-feature columns are zeroed (so a
    saved model still declares FEATURE_NAMES, and simply ignores them).
    """
    txs: list[Transaction] = []
    label_of: dict[str, bool] = {}
    for item in transactions_with_labels:
        tx, is_fraud = item[0], bool(item[1])
        txs.append(tx)
        label_of[tx.transaction_id] = is_fraud
    if len(label_of) != len(txs):
        raise ValueError("transaction_id values must be unique in the training data")
    X, ids = features.replay(txs)
    y = np.fromiter((label_of[i] for i in ids), dtype=bool, count=len(ids))
    ts = np.sort(np.fromiter((t.ts for t in txs), dtype=np.float64, count=len(txs)))
    if not use_card_state:
        X[:, CARD_FEATURE_SLICE] = 0.0

    start = int(np.searchsorted(ts, ts[0] + warmup_days * 86400.0)) if len(ts) else 0
    n = len(ts) - start
    if n < 200 or y[start:].sum() < 10:
        raise ValueError(
            f"too little data to train: {n} rows after warm-up with {int(y[start:].sum())} "
            "frauds; give more history (at least a few thousand rows and dozens of frauds)"
        )
    val0 = start + int(n * (1.0 - VALIDATION_SHARE))
    es0 = start + int((val0 - start) * (1.0 - EARLY_STOP_SHARE))
    fit, es, val = slice(start, es0), slice(es0, val0), slice(val0, None)
    Xf = X[fit].astype(np.float32)
    yf = y[fit]
    pos = max(int(yf.sum()), 1)
    spw = float((len(yf) - pos) / pos)

    names = list(FEATURE_NAMES)
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": ["aucpr", "auc"],
        "tree_method": "hist",
        "max_depth": max_depth,
        "eta": learning_rate,
        "subsample": 0.8,
        "colsample_bytree": 0.9,
        "min_child_weight": 2.0,
        "scale_pos_weight": spw,
        "max_bin": 256,
        "seed": seed,
        "nthread": nthread,
    }
    if monotone:
        unknown = set(monotone) - set(names)
        if unknown:
            raise ValueError(f"monotone constraints on unknown features {sorted(unknown)}")
        params["monotone_constraints"] = (
            "(" + ",".join(str(monotone.get(f, 0)) for f in names) + ")"
        )
    dfit = xgb.DMatrix(Xf, label=yf, feature_names=names)
    des = xgb.DMatrix(X[es].astype(np.float32), label=y[es], feature_names=names)
    booster = xgb.train(
        params,
        dfit,
        num_boost_round=n_trees,
        evals=[(des, "early_stop")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(getattr(booster, "best_iteration", n_trees - 1)) + 1
    if best < booster.num_boosted_rounds():
        booster = booster[:best]  # keep only the trees early stopping chose
    booster.feature_names = names

    Xv = np.ascontiguousarray(X[val].astype(np.float32))
    yv = y[val]
    sv = np.asarray(booster.inplace_predict(Xv, validate_features=False), dtype=np.float64)
    metrics: dict[str, Any] = evaluate(yv, sv)
    review = score_at_rate(sv, REVIEW_RATE)
    decline = score_at_rate(sv, DECLINE_RATE)
    if decline <= review:  # ties at the top: keep decline strictly stricter
        decline = float(np.nextafter(review, 1.0)) if review < 1.0 else review
    metrics["at_review"] = _at_threshold(yv, sv, review)
    metrics["at_decline"] = _at_threshold(yv, sv, decline)
    metrics["train_auc_roc"] = auc_roc(yf, np.asarray(booster.inplace_predict(Xf), np.float64))
    metrics.update(extra_metrics or {})

    def period(sl: slice) -> dict[str, Any]:
        part = ts[sl]
        return {
            "rows": len(part),
            "frauds": int(y[sl].sum()),
            "from": _iso(float(part[0])) if len(part) else None,
            "to": _iso(float(part[-1])) if len(part) else None,
        }

    summary: dict[str, Any] = {
        "source": source,
        "rows": len(ts),
        "frauds": int(y.sum()),
        "period": {"from": _iso(float(ts[0])), "to": _iso(float(ts[-1]))},
        "warmup": period(slice(0, start)),
        "fit": period(fit),
        "early_stopping": period(es),
        "validation": period(val),
        "split_rule": (
            f"by event time after {warmup_days:g} warm-up days (state only): first "
            f"{1 - VALIDATION_SHARE:.0%} training period (its last {EARLY_STOP_SHARE:.0%} is the "
            f"early-stopping set), last {VALIDATION_SHARE:.0%} validation (untouched)"
        ),
        "use_card_state": use_card_state,
        "scale_pos_weight": round(spw, 3),
    }
    fit_params = {
        k: v
        for k, v in params.items()
        if k not in ("nthread", "eval_metric", "monotone_constraints")
    }
    fit_params.update(
        {
            "num_boost_round_max": n_trees,
            "best_iteration": best,
            "early_stopping_rounds": early_stopping_rounds,
            "monotone_constraints": dict(monotone or {}),
        }
    )
    report: dict[str, Any] = {
        "version": version,
        "metrics": metrics,
        "thresholds": {"review": review, "decline": decline},
        "threshold_rule": THRESHOLD_RULE,
        "training": summary,
        "params": fit_params,
        "n_trees": booster.num_boosted_rounds(),
    }
    meta = None
    if save:
        meta = save_version(
            models_dir,
            version,
            booster,
            {"review": review, "decline": decline},
            THRESHOLD_RULE,
            summary,
            metrics,
            notes=notes,
            params=fit_params,
        )
    report["booster"] = booster
    return meta, report


def feature_importance(booster: xgb.Booster, top: int = 10) -> list[tuple[str, float]]:
    gain = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}  # type: ignore[arg-type]
    return sorted(gain.items(), key=lambda kv: -kv[1])[:top]


def train_from_simulator(
    version: str,
    models_dir: Path | str,
    *,
    n: int | None = None,
    days: float | None = None,
    seed: int = 0,
    sim: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[ModelMeta | None, dict[str, Any]]:
    """Simulate ``n`` transactions (or ``days``) with ``seed`` and train on them."""
    from fraudstream.sim.generator import SimConfig, generate

    if n is None and days is None:
        raise ValueError("give n (transactions) or days of simulated history")
    cfg = SimConfig(seed=seed, **(sim or {}))
    events = list(generate(cfg, n=n, days=days))
    kw.setdefault("source", f"simulator seed={seed} n={len(events)} config={_cfg_text(cfg)}")
    kw.setdefault("seed", seed)
    return train(events, version, models_dir, **kw)


def _cfg_text(cfg: Any) -> str:
    return f"(cards={cfg.n_cards}, merchants={cfg.n_merchants}, fraud_rate={cfg.fraud_rate})"


def train_from_file(
    path: Path | str,
    version: str,
    models_dir: Path | str,
    mapping: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[ModelMeta | None, dict[str, Any]]:
    """Train on a labelled CSV/Parquet file (see :func:`fraudstream.sim.files.read_labelled`)."""
    from fraudstream.sim.files import read_labelled

    rows = read_labelled(path, mapping)
    kw.setdefault("source", f"file {Path(path).name}")
    return train(rows, version, models_dir, **kw)


def ablation(events: Sequence[LabelledTx], **kw: Any) -> dict[str, dict[str, Any]]:
    """Validation metrics with and without the card-state features (nothing is saved)."""
    out = {}
    for label, use in (("with_card_state", True), ("stateless", False)):
        _, rep = train(events, f"ablation-{label}", ".", use_card_state=use, save=False, **kw)
        out[label] = rep["metrics"]
    return out
