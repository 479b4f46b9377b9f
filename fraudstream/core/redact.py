"""Keep card numbers out of anything a person or a log store will see."""

from __future__ import annotations

import re

# 13–19 digits, possibly grouped by spaces or dashes: the shape of a primary account number.
# Not after a decimal point: the fraction of a float is not a card number.
_PAN = re.compile(r"(?<![\d.])(?:\d[ -]?){12,18}\d(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact(text: str) -> str:
    """Replace every card-number-shaped digit run (Luhn-valid or not) with a marker."""
    return _PAN.sub("[redacted-digits]", text)


def find_card_numbers(text: str) -> list[str]:
    """Luhn-valid 13–19 digit numbers in ``text`` (for tests and audits)."""
    found = []
    for m in _PAN.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            found.append(digits)
    return found
