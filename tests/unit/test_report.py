"""The report's text: what a fraud analyst reads (the numbers are test_evaluation's)."""

from __future__ import annotations

import dataclasses

from fraudstream.core.evaluation import Options, summarise
from fraudstream.core.ledger import Ledger, join_rows, latest_outcomes, make_window
from fraudstream.core.money import parse_rates
from fraudstream.report import render
from tests.unit.test_evaluation import _random_world, _small
from tests.unit.worlds import NOW


def _text(world: tuple, options: Options | None = None, **window: object) -> str:
    decisions, outs = world
    led = Ledger.of(join_rows(decisions, latest_outcomes(outs)))
    return render(summarise(led, make_window((), now=NOW, **window), options))  # type: ignore[arg-type]


def test_the_text_shows_the_window_counts_money_per_currency_and_verdicts() -> None:
    text = _text(_small(), maturity_days=1)
    assert "mature: decided more than 24.0 h ago (given (--maturity-days))" in text
    assert "Counting: labelled outcomes only" in text
    assert "card level" in text
    lines = text.splitlines()
    v1 = next(line for line in lines if line.startswith("v1") and "champion" in line)
    assert v1.split()[2:6] == ["1", "1", "2", "1"]  # TP FP TN FN
    assert "50.0% [" in v1  # recall with its interval
    cur = {"EUR", "GBP", "USD"}
    money = {tuple(ln.split()[:3]): ln.split()[3:] for ln in lines if ln[:3] in cur}
    assert money[("EUR", "v1", "champion")][:3] == ["100.00", "150.00", "66.7%"]
    assert money[("GBP", "v1", "champion")][:3] == ["0.00", "0.00", "n/a"]
    assert money[("GBP", "v1", "champion")][-2:] == ["30.00", "30.00"]  # flagged, declined
    assert money[("USD", "v2", "challenger")][-1] == "60.00"
    assert "all in" not in text  # never a total across currencies without rates
    assert "v1 (champion) vs v2 (challenger) — independent samples (different cards)" in text
    assert "not significant at 0.05 — too few to say" in text
    assert "give --rates FILE to compare it in one currency" in text


def test_power_lines_and_paired_comparisons() -> None:
    text = _text(_random_world(), maturity_days=1)
    assert "v1 (champion, deciding) vs v3 (shadow) — paired (the same transactions)" in text
    assert "detectable now:" in text
    assert "(10% of the champion's value) in about" in text
    assert "cards with a fraud a day (" in text  # 28 days observed; with the challenger's share
    assert "% challenger)" in text


def test_with_rates_money_is_also_shown_and_compared_in_one_currency() -> None:
    rates = parse_rates({"base": "EUR", "rates": {"GBP": 1.2}})
    text = _text(_random_world(), Options(rates=rates), maturity_days=1)
    assert any(
        line.startswith("all in EUR v1               champion") for line in text.splitlines()
    )
    assert "fraud_money_caught_EUR" in text


def test_an_empty_window_says_what_to_try() -> None:
    text = _text(([], []))
    assert "no mature decisions or labelled outcomes in this window yet" in text
    assert "only 0 fraud labels" in text


def test_notes_say_what_was_left_out() -> None:
    decisions, outs = _small()
    undated = dataclasses.replace(outs[0], transaction_id="t-old", decided_at="", card_id="")
    led = Ledger.of(join_rows(decisions, latest_outcomes([*outs, undated])))
    window = make_window((), now=NOW, maturity_days=1, decisions_from=NOW - 5 * 86400)
    text = render(summarise(led, window))
    assert "Note: fraud.decisions holds every decision only from 2027-01-10" in text
    assert "Note: 1 outcomes written before outcomes carried their decision time" in text
