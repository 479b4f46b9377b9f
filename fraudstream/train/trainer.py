"""Training: history → point-in-time replay → XGBoost → the registry.

The features come from :func:`fraudstream.core.replay.replay`: the worker's own
``features.step``, with every label applied at the moment it arrived (a label delay, or arrival
times), so there is no train/serve skew and no leakage.

Splits, all by event time (never random: random splits leak a card's future into its past):

* the earliest ``warmup_days`` are replayed to build card and entity state but not learnt from
  (every card and merchant looks new at the start of a history, which the live worker never sees);
* the *validation period* is the last ``VALIDATION_SHARE`` of the remaining rows: untouched by
  fitting and by the search, it gives the reported metrics and the thresholds;
* the ``gap_days`` before it (default: the label delay) are not fitted: a model deployed at the
  start of the validation period could not have known their labels;
* the *fit period* is the rest.

There is no early stopping: the number of trees is a parameter, or chosen with the other
hyper-parameters by ``search`` on time-ordered folds inside the fit period
(:mod:`fraudstream.train.search`). With ``refit``, the saved model is then trained again, same
parameters and trees, on every row after the warm-up (the most recent labelled history); its
metadata keeps the held-out metrics of the first fit, and its thresholds are the same rates
applied to its own scores on the validation period.

Thresholds: ``review`` is the score at which 1 % of the validation transactions would be flagged
(review or decline), ``decline`` the score at which 0.2 % would be declined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from fraudstream.core import quality
from fraudstream.core.features import (
    CARD_FEATURE_SLICE,
    ENTITY_FEATURE_SLICE,
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
)
from fraudstream.core.registry import ModelMeta, save_version
from fraudstream.core.replay import LabelEvent
from fraudstream.train import dataset
from fraudstream.train.dataset import CARD_K, Dataset, LabelledTx, evaluate
from fraudstream.train.search import TREE_COUNTS, Params, fit, predict, search

REVIEW_RATE = 0.01
DECLINE_RATE = 0.002
VALIDATION_SHARE = 0.25
DAY_S = 86400.0
THRESHOLD_RULE = (
    f"review = score at which {REVIEW_RATE:.1%} of validation transactions are flagged "
    f"(review or decline); decline = score at which {DECLINE_RATE:.1%} are declined"
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _masked(
    X: np.ndarray, use_card_state: bool, use_entities: bool, off: Sequence[str]
) -> np.ndarray:
    """Ablations: the columns of a group zeroed (the model keeps FEATURE_NAMES, ignores them)."""
    if use_card_state and use_entities and not off:
        return X
    X = X.copy()
    if not use_card_state:
        X[:, CARD_FEATURE_SLICE] = 0.0
    if not use_entities:
        X[:, ENTITY_FEATURE_SLICE] = 0.0
    for name in off:
        X[:, FEATURE_NAMES.index(name)] = 0.0
    return X


def train(
    transactions_with_labels: Iterable[LabelledTx] | Dataset,
    version: str,
    models_dir: Path | str,
    *,
    labels: Iterable[LabelEvent] | None = None,
    label_delay_days: float | None = None,
    params: Params | None = None,
    use_card_state: bool = True,
    use_entities: bool = True,
    disabled_features: Sequence[str] = (),
    warmup_days: float = 0.0,
    gap_days: float | None = None,
    search_grid: Sequence[Params] | bool = False,
    n_folds: int = 3,
    tree_counts: Sequence[int] = TREE_COUNTS,
    refit: bool = False,
    card_k: int = CARD_K,
    source: str = "unknown",
    notes: str = "",
    save: bool = True,
    nthread: int = 0,
    extra_metrics: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    **legacy: Any,
) -> tuple[ModelMeta | None, dict[str, Any]]:
    """Train one version; save it when ``save`` (the default) and return (meta, report).

    ``transactions_with_labels`` are (transaction, is_fraud[, kind]) rows or an already replayed
    :class:`Dataset`. Label arrivals: ``labels`` or ``label_delay_days`` (one is required for
    rows). ``use_card_state`` / ``use_entities`` / ``disabled_features`` are ablations: the
    columns are zeroed, the saved model still declares FEATURE_NAMES. ``search_grid``: True for
    the default grid, or a list of configurations. ``legacy`` accepts the older keyword names
    ``n_trees``, ``max_depth``, ``learning_rate``, ``seed`` and ``monotone``.
    """
    p = _params(params, legacy)
    if isinstance(transactions_with_labels, Dataset):
        data = transactions_with_labels
    else:
        rows = list(transactions_with_labels)
        data = dataset.build(rows, labels, label_delay_days=label_delay_days)
    if gap_days is None:
        gap_days = label_delay_days or 0.0
    X = _masked(data.X, use_card_state, use_entities, disabled_features)
    y, ts = data.y, data.ts
    if not len(ts):
        raise ValueError("too little data to train: no transactions")

    start = data.index_at(ts[0] + warmup_days * DAY_S)
    n = len(ts) - start
    if n < 200 or y[start:].sum() < 10:
        raise ValueError(
            f"too little data to train: {n} rows after warm-up with {int(y[start:].sum())} "
            "frauds; give more history (at least a few thousand rows and dozens of frauds)"
        )
    val0 = start + int(n * (1.0 - VALIDATION_SHARE))
    fit_end = data.index_at(ts[val0] - gap_days * DAY_S)
    if fit_end - start < 100 or y[start:fit_end].sum() < 5:
        raise ValueError(
            f"too little data before the validation period once the {gap_days:g}-day gap is "
            "left out; give more history or a shorter gap"
        )
    day = quality.day_index(ts)

    def card_precision(v: slice, sv: np.ndarray) -> dict[str, float]:
        cp = quality.card_precision_at_k(day[v], data.card[v], y[v], sv, card_k)
        return {f"card_precision_at_{card_k}": cp.mean}

    searched = None
    if search_grid:
        grid = None if search_grid is True else list(search_grid)
        searched = search(
            X, y, ts, start, fit_end, p,
            n_folds=n_folds, gap_s=gap_days * DAY_S, grid=grid, nthread=nthread,
            tree_counts=tree_counts,
            extra=card_precision, log=log,
        )  # fmt: skip
        p = searched.best

    fit_sl, val = slice(start, fit_end), slice(val0, None)
    booster = fit(X[fit_sl], y[fit_sl], p, nthread)
    Xv, yv = np.ascontiguousarray(X[val]), y[val]
    sv = predict(booster, Xv)
    metrics: dict[str, Any] = evaluate(yv, sv, day=day[val], card=data.card[val], card_k=card_k)
    metrics["train_auc_roc"] = quality.auc_roc(y[fit_sl], predict(booster, X[fit_sl]))
    if refit:
        booster = fit(X[start:], y[start:], p, nthread)
        sv = predict(booster, Xv)
    review = quality.score_at_rate(sv, REVIEW_RATE)
    decline = quality.score_at_rate(sv, DECLINE_RATE)
    if decline <= review:  # ties at the top: keep decline strictly stricter
        decline = float(np.nextafter(review, 1.0)) if review < 1.0 else review
    metrics["at_review"] = quality.at_threshold(yv, sv, review)
    metrics["at_decline"] = quality.at_threshold(yv, sv, decline)
    if refit:
        metrics["thresholds_from"] = "the refit model's scores on the validation period (seen)"
    metrics.update(extra_metrics or {})

    def period(sl: slice) -> dict[str, Any]:
        part = ts[sl]
        return {
            "rows": len(part),
            "frauds": int(y[sl].sum()),
            "from": _iso(float(part[0])) if len(part) else None,
            "to": _iso(float(part[-1])) if len(part) else None,
        }

    delays = "arrival times given" if label_delay_days is None else f"{label_delay_days:g} days"
    summary: dict[str, Any] = {
        "source": source,
        "feature_set": FEATURE_SET_VERSION,
        "rows": len(ts),
        "frauds": int(y.sum()),
        "period": {"from": _iso(float(ts[0])), "to": _iso(float(ts[-1]))},
        "warmup": period(slice(0, start)),
        "fit": period(fit_sl),
        "gap": period(slice(fit_end, val0)),
        "validation": period(val),
        "fitted_on": period(slice(start, None) if refit else fit_sl),
        "label_delay": delays,
        "labels_replayed": len(data.labels),
        "split_rule": (
            f"by event time after {warmup_days:g} warm-up days (state only): last "
            f"{VALIDATION_SHARE:.0%} validation (untouched), the {gap_days:g} days before it not "
            f"fitted (labels not yet known), the rest fitted"
            + ("; the saved model refitted on all rows after the warm-up" if refit else "")
        ),
        "use_card_state": use_card_state,
        "use_entities": use_entities,
        "disabled_features": list(disabled_features),
        "scale_pos_weight": round(p.scale_pos_weight(y[fit_sl]), 3),
    }
    report: dict[str, Any] = {
        "version": version,
        "metrics": metrics,
        "thresholds": {"review": review, "decline": decline},
        "threshold_rule": THRESHOLD_RULE,
        "training": summary,
        "params": p.record(),
        "n_trees": booster.num_boosted_rounds(),
    }
    if searched is not None:
        report["search"] = {
            "folds": searched.folds,
            "seconds": round(searched.seconds, 1),
            "rule": "highest mean average precision over the folds (AUC breaks ties)",
            "table": searched.table,
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
            params={**p.record(), **({"search": report["search"]} if searched else {})},
        )
    report["booster"] = booster
    report["validation_scores"] = sv
    return meta, report


def _params(params: Params | None, legacy: dict[str, Any]) -> Params:
    names = {"n_trees", "max_depth", "learning_rate", "seed", "monotone", "class_weight"}
    unknown = set(legacy) - names
    if unknown:
        raise TypeError(f"train() got unexpected keyword arguments {sorted(unknown)}")
    p = params or Params()
    if legacy:
        changes = dict(legacy)
        if changes.get("monotone") is None:
            changes.pop("monotone", None)
        p = replace(p, **changes)
    return p


def feature_importance(booster: xgb.Booster, top: int = 10) -> list[tuple[str, float]]:
    gain = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}  # type: ignore[arg-type]
    return sorted(gain.items(), key=lambda kv: -kv[1])[:top]


def simulator_labels(events: Sequence[Any], seed: int, delay_days: float = 3.0) -> list[LabelEvent]:
    """The simulator's own feedback schedule as label arrivals (delays, missing labels,
    reversals; genuine transactions mostly never labelled)."""
    from fraudstream.sim.generator import feedback_schedule

    out = []
    for due, fb in feedback_schedule(events, delay_s=delay_days * DAY_S, seed=seed):
        out.append(LabelEvent(fb.transaction_id, due, fb.is_fraud))
    return out


def train_from_simulator(
    version: str,
    models_dir: Path | str,
    *,
    n: int | None = None,
    days: float | None = None,
    seed: int = 0,
    sim: dict[str, Any] | None = None,
    label_delay_days: float = 3.0,
    **kw: Any,
) -> tuple[ModelMeta | None, dict[str, Any]]:
    """Simulate ``n`` transactions (or ``days``) with ``seed`` and train on them; labels arrive
    by the simulator's feedback schedule (mean chargeback delay ``label_delay_days``)."""
    from fraudstream.sim.generator import SimConfig, generate

    if n is None and days is None:
        raise ValueError("give n (transactions) or days of simulated history")
    cfg = SimConfig(seed=seed, **(sim or {}))
    events = list(generate(cfg, n=n, days=days))
    kw.setdefault("source", f"simulator seed={seed} n={len(events)} config={_cfg_text(cfg)}")
    kw.setdefault("seed", seed)
    kw.setdefault("gap_days", label_delay_days)
    labels = simulator_labels(events, seed, label_delay_days)
    return train(events, version, models_dir, labels=labels, **kw)


def _cfg_text(cfg: Any) -> str:
    return f"(cards={cfg.n_cards}, merchants={cfg.n_merchants}, fraud_rate={cfg.fraud_rate})"


def train_from_file(
    path: Path | str,
    version: str,
    models_dir: Path | str,
    mapping: dict[str, str] | None = None,
    *,
    constants: dict[str, str] | None = None,
    naive_utc: bool = False,
    until: float | None = None,
    **kw: Any,
) -> tuple[ModelMeta | None, dict[str, Any]]:
    """Train on a labelled CSV/Parquet file (see :func:`fraudstream.sim.files.read_labelled`);
    with a ``reported_at`` column mapped, labels arrive then, else ``label_delay_days`` after
    each transaction. ``until``: only transactions before this POSIX time are used."""
    from fraudstream.sim.files import read_labelled_file

    lf = read_labelled_file(path, mapping, constants=constants, naive_utc=naive_utc, until=until)
    kw.setdefault("source", f"file {Path(path).name}")
    if lf.arrivals is not None:
        kw["labels"] = lf.arrivals
    return train(lf.rows, version, models_dir, **kw)
