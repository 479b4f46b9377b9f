"""Readable reason codes: every model feature mapped to a stable code and a sentence filled with the
transaction's value ("amount is 6.1× this card's 30-day average").

The codes are part of the contract (``reason_codes`` on a decision): dashboards, case tools and
customer-service scripts key on them, so add codes, never rename them. The sentences may be
reworded. Features that say the same thing share a code (``amount`` and ``log_amount``), and a
decision shows each code once. Sentences never contain a card number, a card id or a device id.

Rules beside the model have their own codes (``RULE_*``, see ``core/rules.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fraudstream.core.messages import Reason, ReasonCode

Render = Callable[[float, str], str]  # (feature value, currency) -> sentence

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MCC_RISK = {-1: "unknown", 0: "ordinary", 1: "elevated-risk", 2: "high-risk"}
_CHANNEL = {"pos": "in-store (POS)", "ecom": "e-commerce", "atm": "ATM", "moto": "mail/phone order"}


@dataclass(frozen=True, slots=True)
class Entry:
    code: str
    render: Render


def _n(value: float) -> int:
    return round(value) if math.isfinite(value) else 0


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _money(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}".strip()


def _ratio(value: float) -> str:
    return f"{value:.1f}×" if value < 100 else f"{value:,.0f}×"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return _plural(_n(seconds), "second")
    if seconds < 2 * 3600:
        return _plural(_n(seconds / 60), "minute")
    if seconds < 2 * 86400:
        return _plural(_n(seconds / 3600), "hour")
    return _plural(_n(seconds / 86400), "day")


def _days(value: float) -> str:
    return f"{value:.1f} days" if value < 10 else _plural(_n(value), "day")


def _amount(value: float, currency: str) -> str:
    return f"amount is {_money(value, currency)}"


def _log_amount(value: float, currency: str) -> str:
    return _amount(math.expm1(min(value, 700.0)), currency)


def _hour(value: float, _: str) -> str:
    return f"made at {_n(value):02d}:00–{_n(value):02d}:59 local time"


def _weekday(value: float, _: str) -> str:
    return f"made on a {_WEEKDAYS[_n(value) % 7]}"


def _channel(name: str) -> Render:
    def render(value: float, _: str) -> str:
        return f"channel is {'' if value else 'not '}{_CHANNEL[name]}"

    return render


def _mcc(value: float, _: str) -> str:
    return "merchant category unknown" if value < 0 else f"merchant category code {_n(value)}"


def _mcc_risk(value: float, _: str) -> str:
    return f"merchant category is {_MCC_RISK.get(_n(value), 'unknown')}"


def _flag(yes: str, no: str) -> Render:
    return lambda value, _: yes if value >= 0.5 else no


def _count(window: str) -> Render:
    return lambda value, _: (
        f"card made {_plural(_n(value), 'earlier transaction')} in the last {window}"
    )


def _spent(window: str) -> Render:
    return lambda value, cur: f"card spent {_money(value, cur)} in the last {window} before this"


def _vs_avg(window: str, span: str) -> Render:
    def render(value: float, _: str) -> str:
        if value < 0:
            return f"card has no earlier transactions in the last {span}"
        return f"amount is {_ratio(value)} this card's {window} average"

    return render


def _vs_card(value: float, _: str) -> str:
    return f"amount is {_ratio(value)} this card's average amount"


def _since_prev(value: float, _: str) -> str:
    if value < 0:
        return "first transaction seen for this card"
    return f"{_duration(value)} since the card's previous transaction"


def _card_age(value: float, _: str) -> str:
    return f"card first seen {_days(max(value, 0.0))} ago"


def _merchant_count(window: str) -> Render:
    return lambda value, _: f"merchant had {_plural(_n(value), 'transaction')} in the last {window}"


def _merchant_avg(value: float, cur: str) -> str:
    if value < 0:
        return "merchant has no transactions in the last 30 days"
    return f"merchant's 30-day average amount is {_money(value, cur)}"


def _merchant_frauds(window: str) -> Render:
    return lambda value, _: (
        f"{_plural(_n(value), 'confirmed fraud')} at this merchant in the last {window}"
    )


def _merchant_reported(window: str) -> Render:
    return lambda value, _: (
        f"{_plural(_n(value), 'fraud')} at this merchant reported in the last {window}"
    )


def _rate(value: float, _: str) -> str:
    return f"{value * 100:.1f}% of this merchant's 30-day transactions are confirmed fraud"


def _since_fraud(whom: str) -> Render:
    def render(value: float, _: str) -> str:
        if value < 0:
            return f"no known fraud {whom}"
        return f"latest known fraud {whom} was {_days(value)} before this"

    return render


def _fraud_span(value: float, _: str) -> str:
    if value < 0:
        return "no known fraud at this merchant"
    return f"known frauds at this merchant span {_days(value)}"


def _genuine_after(value: float, _: str) -> str:
    if value < 0:
        return "no known fraud at this merchant"
    return f"{_plural(_n(value), 'genuine transaction')} at this merchant since its latest fraud"


def _vs_merchant(value: float, _: str) -> str:
    if value < 0:
        return "merchant's usual amount is unknown"
    return f"amount is {_ratio(value)} this merchant's 30-day average"


def _card_frauds(value: float, _: str) -> str:
    return f"{_plural(_n(value), 'confirmed fraud')} on this card in the last 30 days"


def _card_reported(value: float, _: str) -> str:
    return f"{_plural(_n(value), 'fraud')} on this card reported in the last 7 days"


def _simple(text: Callable[[int], str]) -> Render:
    return lambda value, _: text(_n(value))


#: Feature name -> (stable code, sentence). Covers feature sets fs1 and fs2.
CATALOGUE: Mapping[str, Entry] = {
    # the transaction itself
    "amount": Entry("AMOUNT", _amount),
    "log_amount": Entry("AMOUNT", _log_amount),
    "local_hour": Entry("TIME_OF_DAY", _hour),
    "local_weekday": Entry("DAY_OF_WEEK", _weekday),
    "channel_pos": Entry("CHANNEL", _channel("pos")),
    "channel_ecom": Entry("CHANNEL", _channel("ecom")),
    "channel_atm": Entry("CHANNEL", _channel("atm")),
    "channel_moto": Entry("CHANNEL", _channel("moto")),
    "mcc": Entry("MERCHANT_CATEGORY", _mcc),
    "mcc_risk": Entry("MERCHANT_CATEGORY_RISK", _mcc_risk),
    "has_device": Entry("DEVICE_GIVEN", _flag("a device id was given", "no device id was given")),
    # the card's own past
    "card_count_1h": Entry("CARD_VELOCITY_1H", _count("hour")),
    "card_amount_1h": Entry("CARD_SPEND_1H", _spent("hour")),
    "card_count_24h": Entry("CARD_VELOCITY_24H", _count("24 hours")),
    "card_amount_24h": Entry("CARD_SPEND_24H", _spent("24 hours")),
    "card_count_7d": Entry("CARD_VELOCITY_7D", _count("7 days")),
    "card_amount_7d": Entry("CARD_SPEND_7D", _spent("7 days")),
    "card_count_30d": Entry("CARD_VELOCITY_30D", _count("30 days")),
    "card_amount_30d": Entry("CARD_SPEND_30D", _spent("30 days")),
    "amount_to_card_avg": Entry("AMOUNT_VS_CARD_AVG", _vs_card),
    "amount_to_avg_24h": Entry("AMOUNT_VS_CARD_24H", _vs_avg("24-hour", "24 hours")),
    "amount_to_avg_7d": Entry("AMOUNT_VS_CARD_7D", _vs_avg("7-day", "7 days")),
    "amount_to_avg_30d": Entry("AMOUNT_VS_CARD_30D", _vs_avg("30-day", "30 days")),
    "secs_since_prev": Entry("TIME_SINCE_PREVIOUS", _since_prev),
    "card_age_days": Entry("CARD_AGE", _card_age),
    "new_merchant": Entry(
        "NEW_MERCHANT",
        _flag("first payment of this card at this merchant", "card has paid this merchant before"),
    ),
    "new_device": Entry(
        "NEW_DEVICE", _flag("device not used by this card before", "device known for this card")
    ),
    "card_devices": Entry(
        "CARD_DEVICES", _simple(lambda n: f"card used {_plural(n, 'distinct device')}")
    ),
    "foreign_country": Entry(
        "FOREIGN_COUNTRY",
        _flag("country differs from the card's home country", "country is the card's home"),
    ),
    "small_count_1h": Entry(
        "CARD_TESTING",
        _simple(lambda n: f"{_plural(n, 'small transaction')} (under 5) on this card in 1 hour"),
    ),
    "countries_24h": Entry(
        "COUNTRIES_24H",
        _simple(lambda n: f"card used in {_plural(n, 'country', 'countries')} in 24 hours"),
    ),
    # the merchant's traffic and labels (fs2 entity features)
    "m_count_1d": Entry("MERCHANT_VOLUME_1D", _merchant_count("day")),
    "m_count_7d": Entry("MERCHANT_VOLUME_7D", _merchant_count("7 days")),
    "m_count_30d": Entry("MERCHANT_VOLUME_30D", _merchant_count("30 days")),
    "m_avg_amount_30d": Entry("MERCHANT_AVG_AMOUNT", _merchant_avg),
    "m_frauds_7d": Entry("MERCHANT_FRAUDS_7D", _merchant_frauds("7 days")),
    "m_frauds_30d": Entry("MERCHANT_FRAUDS_30D", _merchant_frauds("30 days")),
    "m_fraud_rate_30d": Entry("MERCHANT_FRAUD_RATE", _rate),
    "m_reported_1d": Entry("MERCHANT_REPORTED_1D", _merchant_reported("day")),
    "m_reported_7d": Entry("MERCHANT_REPORTED_7D", _merchant_reported("7 days")),
    "m_days_since_fraud": Entry("MERCHANT_RECENT_FRAUD", _since_fraud("at this merchant")),
    "m_fraud_span_days": Entry("MERCHANT_FRAUD_SPAN", _fraud_span),
    "m_genuine_after_fraud": Entry("MERCHANT_GENUINE_AFTER_FRAUD", _genuine_after),
    "amount_to_merchant_avg": Entry("AMOUNT_VS_MERCHANT_AVG", _vs_merchant),
    # the card's labels (fs2 entity features)
    "c_frauds_30d": Entry("CARD_FRAUDS_30D", _card_frauds),
    "c_reported_7d": Entry("CARD_REPORTED_7D", _card_reported),
    "c_days_since_fraud": Entry("CARD_RECENT_FRAUD", _since_fraud("on this card")),
}

#: For a feature a model knows but the catalogue does not (a newer feature set): still readable.
UNKNOWN_CODE = "OTHER_FEATURE"


def explain(reason: Reason, currency: str) -> ReasonCode:
    """The code and sentence of one model reason (a feature and its value)."""
    entry = CATALOGUE.get(reason.feature)
    value = reason.value
    if entry is None:
        return ReasonCode(UNKNOWN_CODE, f"{reason.feature} is {value:g}", "model", reason.feature)
    if not math.isfinite(value):
        return ReasonCode(entry.code, f"{reason.feature} is missing", "model", reason.feature)
    try:
        text = entry.render(value, currency)
    except (ValueError, OverflowError, IndexError):  # a sentence must never sink a decision
        text = f"{reason.feature} is {value:g}"
    return ReasonCode(entry.code, text, "model", reason.feature)


def explain_all(reasons: Iterable[Reason], currency: str) -> tuple[ReasonCode, ...]:
    """``explain`` for every reason, in order, each code once (the first, strongest, wins)."""
    seen: set[str] = set()
    out: list[ReasonCode] = []
    for reason in reasons:
        code = explain(reason, currency)
        if code.code not in seen:
            seen.add(code.code)
            out.append(code)
    return tuple(out)
