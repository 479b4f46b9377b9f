"""Money across currencies: never added as they come; converted only with rates the user gives.

A rates file is JSON: ``{"base": "EUR", "rates": {"GBP": 1.17, "USD": 0.92}}`` — how many units
of the base one unit of each currency is worth (the base itself is 1). Every currency the report
meets must be listed: a missing rate is an error, never a silent zero.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fraudstream.errors import ConfigError

_CODE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class Rates:
    base: str
    per_unit: Mapping[str, float]  # currency -> units of base per unit

    def rate(self, currency: str) -> float:
        if currency == self.base:
            return 1.0
        try:
            return self.per_unit[currency]
        except KeyError:
            raise ConfigError(
                f'the rates file has no rate for {currency}: add it under "rates" '
                f"(units of {self.base} per 1 {currency})"
            ) from None

    def check_covers(self, currencies: Iterable[str]) -> None:
        missing = sorted({c for c in currencies if c != self.base and c not in self.per_unit})
        if missing:
            raise ConfigError(
                f'the rates file has no rate for {", ".join(missing)}: add them under "rates" '
                f"(units of {self.base} per unit), or leave out --rates to see money per currency"
            )


def parse_rates(obj: Any, source: str = "rates") -> Rates:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"{source}: {why}. Expected JSON like "
            '{"base": "EUR", "rates": {"GBP": 1.17, "USD": 0.92}}'
        )

    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    base = obj.get("base")
    rates = obj.get("rates")
    if not isinstance(base, str) or not _CODE.match(base):
        raise bad("'base' must be an ISO 4217 code such as EUR")
    if not isinstance(rates, dict) or not rates:
        raise bad("'rates' must be a non-empty object of currency: rate")
    out: dict[str, float] = {}
    for code, value in rates.items():
        if not _CODE.match(str(code)):
            raise bad(f"{code!r} is not an ISO 4217 code")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(f"the rate of {code} is not a number")
        if not math.isfinite(value) or value <= 0:
            raise bad(f"the rate of {code} must be a positive number, got {value}")
        out[str(code)] = float(value)
    if base in out and out[base] != 1.0:
        raise bad(f"the base {base} must have rate 1 (or be left out), got {out[base]}")
    return Rates(base, out)


def load_rates(text: str, source: str) -> Rates:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc})") from None
    return parse_rates(obj, source)


def fmt_money(amount: float, currency: str) -> str:
    return f"{currency} {amount:,.2f}"
