"""Rows of decisions joined with outcomes; the window: decision time, maturity, completeness."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fraudstream.core.ledger import (
    FALLBACK_MATURITY_DAYS,
    Ledger,
    join_rows,
    label_delays,
    latest_outcomes,
    make_window,
    parse_when,
)
from fraudstream.errors import ConfigError
from tests.unit.worlds import DAY, NOW, dec, out


def test_a_decision_gives_its_row_and_its_shadow_row_labelled_where_known() -> None:
    d = dec("t1", "c1", "v1", "champion", "decline", shadow=("v2", "approve"))
    rows = list(join_rows([d], latest_outcomes([out(d, True)])))
    assert [(r.model_version, r.variant, r.decider_version) for r in rows] == [
        ("v1", "champion", "v1"),
        ("v2", "shadow", "v1"),
    ]
    own, sh = rows
    assert (own.is_fraud, own.outcome, own.source) == (True, "TP", "decisions")
    assert (sh.decision, sh.is_fraud, sh.outcome) == ("approve", None, None)
    assert own.card_id == sh.card_id == "c1"
    assert own.amount == sh.amount == 10.0


def test_the_latest_label_counts_and_outcomes_without_their_decision_still_appear() -> None:
    d = dec("t1", "c1", "v1", "champion", "decline")
    gone = dec("t0", "c9", "v1", "champion", "approve", age_days=40)
    outs = [out(d, False), out(d, True, delay_days=2), out(gone, True)]
    rows = list(join_rows([d], latest_outcomes(outs)))
    assert [(r.transaction_id, r.outcome, r.source) for r in rows] == [
        ("t1", "TP", "decisions"),  # the reversal replaced the FP
        ("t0", "FN", "outcomes"),  # its decision has left fraud.decisions: still counted
    ]
    assert rows[1].decided_at == gone.decided_at
    assert rows[1].card_id == "c9"


def test_ledger_columns_and_unknown_cards_are_their_own_cluster() -> None:
    d = dec("t1", "c1", "v1", "champion", "review", currency="GBP")
    old = dataclasses.replace(out(dec("t2", "x", "v1", "champion", "approve"), True), card_id="")
    led = Ledger.of(join_rows([d], latest_outcomes([old])))
    assert len(led) == 2
    assert led.groups == (("v1", "champion"),)
    assert led.currencies == ("GBP", "EUR")
    assert list(led.decision) == [1, 0]
    assert list(led.label) == [-1, 1]
    assert led.cards == 2
    assert list(led.from_decisions) == [True, False]
    assert math.isnan(led.labelled[0])


def _world(ages: list[float], delays: list[float]) -> tuple[Ledger, np.ndarray]:
    decisions = [
        dec(f"t{i}", f"c{i}", "v1", "champion", "approve", age_days=a, shadow=("v2", "approve"))
        for i, a in enumerate(ages)
    ]
    outs = [out(d, True, delay_days=x) for d, x in zip(decisions, delays, strict=False)]
    outs += [out(d, True, delay_days=99, shadow=True) for d in decisions]  # not counted twice
    outs.append(out(dec("g", "c", "v1", "champion", "approve"), False, delay_days=99))  # genuine
    return Ledger.of(join_rows(decisions, latest_outcomes(outs))), label_delays(outs)


def test_maturity_is_measured_from_fraud_label_delays() -> None:
    delays = [0.1 * (i + 1) for i in range(40)]  # 0.1 .. 4.0 days
    _, seen = _world([10.0] * 40, delays)
    assert seen / DAY == pytest.approx(delays)  # fraud labels of deciding models only
    w = make_window(seen, now=NOW)
    assert w.maturity_s / DAY == pytest.approx(np.quantile(delays, 0.95))
    assert "95% of 40 fraud labels" in w.maturity_source
    assert w.mature_before == pytest.approx(NOW - w.maturity_s)


def test_maturity_falls_back_without_enough_labels_and_can_be_given() -> None:
    _, seen = _world([10.0] * 5, [1.0] * 5)
    w = make_window(seen, now=NOW)
    assert w.maturity_s == FALLBACK_MATURITY_DAYS * DAY
    assert "only 5 fraud labels" in w.maturity_source
    w = make_window(seen, now=NOW, maturity_days=2.5)
    assert w.maturity_s == 2.5 * DAY
    assert w.maturity_source == "given (--maturity-days)"
    with pytest.raises(ConfigError, match="0 or more"):
        make_window(seen, now=NOW, maturity_days=-1)


def test_window_mask_since_until_maturity() -> None:
    led, _ = _world([20.0, 9.0, 5.0, 1.0], [0.5] * 4)
    deciding = (led.group == 0) & led.from_decisions  # the deciding rows of the decisions
    w = make_window((), now=NOW, maturity_days=3)
    assert list(w.mask(led)[deciding]) == [True, True, True, False]  # 1 day old: not mature
    w = make_window((), now=NOW, since=NOW - 10 * DAY, until=NOW - 6 * DAY, maturity_days=0)
    assert list(w.mask(led)[deciding]) == [False, True, False, False]
    w = make_window((), now=NOW, maturity_days=0, decisions_from=NOW - 6 * DAY)
    assert list(w.decisions_mask(led)[deciding]) == [False, False, True, True]
    with pytest.raises(ConfigError, match="must be after"):
        make_window((), now=NOW, since=NOW, until=NOW - DAY)


def test_parse_when() -> None:
    assert parse_when("36h", NOW) == NOW - 36 * 3600
    assert parse_when("7d", NOW) == NOW - 7 * DAY
    assert parse_when("2w", NOW) == NOW - 14 * DAY
    assert parse_when("90m", NOW) == NOW - 5400
    assert parse_when("2026-11-29", NOW) == 1_795_910_400.0  # midnight UTC
    assert parse_when("2026-11-29T01:00:00+01:00", NOW) == 1_795_910_400.0
    with pytest.raises(ConfigError, match="not a time"):
        parse_when("yesterday", NOW)
