"""Which model decides for which card: a pure function of (card_id, salt, challenger_share).

The bucket of a card is a hash, not a random draw, so every worker process, on any host and after
any restart, routes a card the same way. A card goes to the challenger iff its bucket is below the
share, so raising the share only moves cards from champion to challenger, never back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fraudstream.core.messages import Routing, Variant, routing_problem
from fraudstream.errors import ConfigError

_TWO_64 = float(2**64)
# The unit separator cannot occur in a sensible salt, so ("a", "bc") and ("ab", "c") differ.
_SEP = "\x1f"


def bucket(card_id: str, salt: str) -> float:
    """The card's position in [0, 1): blake2b-64 of ``salt + 0x1F + card_id``, big-endian / 2^64."""
    digest = hashlib.blake2b(f"{salt}{_SEP}{card_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64


def assign(card_id: str, salt: str, share: float) -> Variant:
    """``challenger`` iff the card's bucket is below ``share`` (0: nobody, 1: everybody)."""
    return "challenger" if bucket(card_id, salt) < share else "champion"


def assign_many(card_ids: Iterable[str], salt: str, share: float) -> list[Variant]:
    return [assign(card_id, salt, share) for card_id in card_ids]


def effective_roles(routing: Routing, variant: Variant) -> tuple[str, str | None]:
    """(deciding version, shadow version or None) for a card assigned to ``variant``.

    Without a challenger everyone is champion. In shadow mode the other model scores too.
    """
    challenger = routing.challenger
    if challenger is None:
        return routing.champion, None
    if variant == "challenger":
        return challenger, routing.champion if routing.shadow else None
    return routing.champion, challenger if routing.shadow else None


def route(routing: Routing, card_id: str) -> tuple[Variant, str, str | None]:
    """(variant, deciding version, shadow version or None) for one card under ``routing``."""
    variant: Variant = (
        "champion"
        if routing.challenger is None
        else assign(card_id, routing.salt, routing.challenger_share)
    )
    deciding, shadow = effective_roles(routing, variant)
    return variant, deciding, shadow


def validate_routing(routing: Routing) -> None:
    """Raise ConfigError when the routing cannot be applied (share range, missing challenger...)."""
    problem = routing_problem(routing)
    if problem is not None:
        raise ConfigError(f"invalid routing: {problem}")
