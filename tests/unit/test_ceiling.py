"""Which frauds a point-in-time model can know of (fraudstream/backtest/ceiling.py): a fraud of a
merchant-driven kind only once a fraud at its merchant, inside the 30-day window, was labelled
before the transaction's entity cutoff; any other fraud always."""

from __future__ import annotations

import numpy as np
import pytest

from fraudstream.backtest.ceiling import MERCHANT_WINDOW_S, Place, ceiling, knowable
from fraudstream.backtest.evaluate import VersionScores
from fraudstream.core.entity import cutoff
from fraudstream.core.replay import LabelEvent

DAY = 86400.0
T0 = 100 * DAY  # midnight: cutoff(T0 + 2 h) = T0 + 1 h (hour buckets, 5 min of slack)


def _scores(rows: list[tuple[str, bool, str]]) -> VersionScores:
    n = len(rows)
    return VersionScores(
        version="v",
        ids=[r[0] for r in rows],
        score=np.linspace(0.1, 0.2, n),
        decision=np.array(["approve"] * n, dtype=object),
        role=np.array(["champion"] * n, dtype=object),
        y=np.array([r[1] for r in rows], dtype=bool),
        day=np.zeros(n, dtype=np.int64),
        card=np.array([f"c{i}" for i in range(n)], dtype=object),
        amount=np.ones(n),
        currency=np.array(["EUR"] * n, dtype=object),
        kind=np.array([r[2] for r in rows], dtype=object),
    )


def test_a_terminal_fraud_is_knowable_only_once_a_fraud_there_was_reported_before_its_cutoff() -> (
    None
):
    at = T0 + 2 * 3600.0
    cut = cutoff(at)
    txs = {
        "old": Place("T", at - 9 * DAY),  # fraud, reported 7 d later: before the cutoff
        "late": Place("U", at - 5 * DAY),  # fraud, reported after the cutoff
        "stale": Place("V", cut - MERCHANT_WINDOW_S - 1.0),  # outside the 30-day window
        "a": Place("T", at),
        "b": Place("U", at),
        "c": Place("V", at),
        "d": Place("W", at),  # another kind: knowable whatever the labels say
        "e": Place("T", at),  # genuine
    }
    labels = [
        LabelEvent("old", txs["old"].ts + 7 * DAY, True),
        LabelEvent("late", cut + 1.0, True),
        LabelEvent("stale", txs["stale"].ts + 7 * DAY, True),
    ]
    vs = _scores(
        [("a", True, "2"), ("b", True, "2"), ("c", True, "2"), ("d", True, "3"), ("e", False, "")]
    )
    assert knowable(vs, txs, labels, {"2"}).tolist() == [True, False, False, True, False]
    # A label reported exactly at the cutoff is not yet known (strictly before, as the worker).
    on_cut = [LabelEvent("late", cut, True)]
    assert not knowable(vs, txs, on_cut, {"2"})[1]
    # Genuine labels say nothing about a compromise.
    genuine = [LabelEvent("old", txs["old"].ts + 7 * DAY, False)]
    assert not knowable(vs, txs, genuine, {"2"})[0]


def test_the_ceiling_reports_the_model_order_and_chance() -> None:
    vs = _scores([("a", True, "2"), ("b", False, ""), ("c", True, "3")])
    got = ceiling(vs, np.array([False, False, True]), 1, 0.5, draws=20)
    assert (got["frauds"], got["knowable"], got["draws"]) == (2, 1, 20)
    # k = 1 on one day: the knowable fraud card is always first.
    assert got["model_order"] == got["random_min"] == got["random_max"] == 1.0
    assert got["random_reaching_target"] == pytest.approx(1.0)
