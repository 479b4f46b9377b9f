"""The reason-code catalogue: every feature of every shipped feature set has a code and a
readable sentence filled with the transaction's value."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from fraudstream.core import features
from fraudstream.core.messages import Reason
from fraudstream.core.reasons import CATALOGUE, UNKNOWN_CODE, explain, explain_all

MODELS = Path(__file__).resolve().parents[2] / "models"

# Feature set fs2 (branch `detection`: core/features.py and core/entity.py), listed here so that
# the catalogue is known to cover it before its models ship.
FS2 = (
    *features.STATELESS_FEATURES,
    "card_count_1h", "card_amount_1h", "card_count_24h", "card_amount_24h", "card_count_7d",
    "card_amount_7d", "card_count_30d", "card_amount_30d", "amount_to_card_avg",
    "amount_to_avg_24h", "amount_to_avg_7d", "amount_to_avg_30d", "secs_since_prev",
    "card_age_days", "new_merchant", "new_device", "card_devices", "foreign_country",
    "small_count_1h", "countries_24h",
    "m_count_1d", "m_count_7d", "m_count_30d", "m_avg_amount_30d", "m_frauds_7d",
    "m_frauds_30d", "m_fraud_rate_30d", "m_reported_1d", "m_reported_7d", "m_days_since_fraud",
    "m_fraud_span_days", "m_genuine_after_fraud", "amount_to_merchant_avg",
    "c_frauds_30d", "c_reported_7d", "c_days_since_fraud",
)  # fmt: skip


def _shipped_feature_names() -> set[str]:
    names = set(features.FEATURE_NAMES) | set(FS2)
    metas = sorted(MODELS.glob("*/metadata.json"))
    assert metas, f"no shipped models under {MODELS}"
    for meta in metas:
        names |= set(json.loads(meta.read_text())["feature_names"])
    return names


def test_every_feature_of_every_shipped_feature_set_has_an_entry() -> None:
    missing = sorted(_shipped_feature_names() - set(CATALOGUE))
    assert not missing, f"add these features to core/reasons.py CATALOGUE: {missing}"


@pytest.mark.parametrize("feature", sorted(CATALOGUE))
@pytest.mark.parametrize("value", [-1.0, 0.0, 0.5, 1.0, 3.0, 7.25, 6000.0, 1e7])
def test_every_entry_renders_a_sentence_for_sentinels_and_ordinary_values(
    feature: str, value: float
) -> None:
    code = explain(Reason(feature, value, 0.3), "EUR")
    assert re.fullmatch(r"[A-Z][A-Z0-9_]+", code.code)
    assert code.source == "model"
    assert code.ref == feature
    assert code.text
    assert "nan" not in code.text.lower()
    assert "{" not in code.text


def test_sentences_are_filled_with_the_transactions_values() -> None:
    def text(feature: str, value: float) -> str:
        return explain(Reason(feature, value, 1.0), "GBP").text

    assert text("amount_to_avg_30d", 6.1) == "amount is 6.1× this card's 30-day average"
    assert text("amount_to_avg_30d", -1.0) == "card has no earlier transactions in the last 30 days"
    assert text("amount", 1234.5) == "amount is 1,234.50 GBP"
    assert text("log_amount", math.log1p(99.99)) == "amount is 99.99 GBP"
    assert text("card_count_1h", 1.0) == "card made 1 earlier transaction in the last hour"
    assert text("card_count_1h", 7.0) == "card made 7 earlier transactions in the last hour"
    assert text("secs_since_prev", 45.0) == "45 seconds since the card's previous transaction"
    assert text("secs_since_prev", -1.0) == "first transaction seen for this card"
    assert text("new_merchant", 1.0) == "first payment of this card at this merchant"
    assert text("mcc_risk", 2.0) == "merchant category is high-risk"
    assert text("channel_ecom", 1.0) == "channel is e-commerce"
    assert text("local_weekday", 0.0) == "made on a Monday"
    assert text("m_fraud_rate_30d", 0.125) == (
        "12.5% of this merchant's 30-day transactions are confirmed fraud"
    )


def test_codes_are_stable() -> None:
    # Dashboards key on these: a rename is a contract break (add codes, never rename).
    assert CATALOGUE["amount_to_avg_30d"].code == "AMOUNT_VS_CARD_30D"
    assert CATALOGUE["card_count_1h"].code == "CARD_VELOCITY_1H"
    assert CATALOGUE["amount"].code == CATALOGUE["log_amount"].code == "AMOUNT"


def test_each_code_once_strongest_first_and_unknown_features_stay_readable() -> None:
    reasons = (
        Reason("log_amount", math.log1p(50.0), 2.0),
        Reason("amount", 50.0, 1.0),
        Reason("fs9_new_thing", 3.5, 0.5),
        Reason("card_count_1h", math.nan, 0.1),
    )
    codes = explain_all(reasons, "USD")
    assert [c.code for c in codes] == ["AMOUNT", UNKNOWN_CODE, "CARD_VELOCITY_1H"]
    assert codes[0].ref == "log_amount"
    assert codes[1].text == "fs9_new_thing is 3.5"
    assert codes[2].text == "card_count_1h is missing"
