"""Rates files: what they must say, and what happens when a currency is missing."""

from __future__ import annotations

import pytest

from fraudstream.core.money import fmt_money, load_rates, parse_rates
from fraudstream.errors import ConfigError


def test_rates_convert_and_the_base_is_one() -> None:
    r = load_rates('{"base": "EUR", "rates": {"GBP": 1.17, "USD": 0.92}}', "rates.json")
    assert (r.rate("EUR"), r.rate("GBP"), r.rate("USD")) == (1.0, 1.17, 0.92)
    r.check_covers(["EUR", "GBP"])
    with pytest.raises(ConfigError, match="no rate for PLN, SEK"):
        r.check_covers(["SEK", "EUR", "PLN"])
    with pytest.raises(ConfigError, match="no rate for JPY"):
        r.rate("JPY")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[1]", "not a JSON object"),
        ('{"rates": {"GBP": 1}}', "'base' must be"),
        ('{"base": "EUR", "rates": {}}', "non-empty"),
        ('{"base": "EUR", "rates": {"gbp": 1}}', "not an ISO 4217 code"),
        ('{"base": "EUR", "rates": {"GBP": "1.1"}}', "not a number"),
        ('{"base": "EUR", "rates": {"GBP": 0}}', "positive"),
        ('{"base": "EUR", "rates": {"GBP": true}}', "not a number"),
        ('{"base": "EUR", "rates": {"EUR": 2}}', "must have rate 1"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_rates_files_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        load_rates(text, "my-rates.json")
    assert "my-rates.json" in str(err.value)


def test_parse_rates_keeps_the_base_rate_of_one() -> None:
    assert parse_rates({"base": "EUR", "rates": {"EUR": 1, "GBP": 1.2}}).rate("EUR") == 1.0
    assert fmt_money(1234.5, "GBP") == "GBP 1,234.50"
