"""Training: replays history through ``fraudstream.core.features``; registers XGBoost versions."""

from fraudstream.train.trainer import (
    THRESHOLD_RULE,
    ablation,
    auc_roc,
    average_precision,
    evaluate,
    precision_at_k,
    train,
    train_from_file,
    train_from_simulator,
)

__all__ = [
    "THRESHOLD_RULE",
    "ablation",
    "auc_roc",
    "average_precision",
    "evaluate",
    "precision_at_k",
    "train",
    "train_from_file",
    "train_from_simulator",
]
