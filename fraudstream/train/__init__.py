"""Training: replays history point-in-time through ``fraudstream.core``; registers versions."""

from fraudstream.core.quality import auc_roc, average_precision, precision_at_k
from fraudstream.train.dataset import evaluate
from fraudstream.train.search import Params
from fraudstream.train.trainer import (
    THRESHOLD_RULE,
    train,
    train_from_file,
    train_from_simulator,
)

__all__ = [
    "THRESHOLD_RULE",
    "Params",
    "auc_roc",
    "average_precision",
    "evaluate",
    "precision_at_k",
    "train",
    "train_from_file",
    "train_from_simulator",
]
