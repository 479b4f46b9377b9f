"""Card routing: pinned hash values, monotone shares, honest proportions."""

from __future__ import annotations

import math
import random

import pytest

from fraudstream.core.messages import Routing
from fraudstream.core.routing import (
    assign,
    assign_many,
    bucket,
    effective_roles,
    route,
    validate_routing,
)
from fraudstream.errors import ConfigError

# Computed once and pinned, like aiokafka pins murmur2 against the Java client: any change to the
# hash, the separator or the byte order reshuffles every card in production and must fail here.
GOLDEN = [
    ("card-1", "fraudstream", 0.8052061111810421),
    ("card-2", "fraudstream", 0.3534043843348726),
    ("", "fraudstream", 0.6467982153471658),
    ("card-1", "", 0.18132643246754135),
    ("tok_9f8e7d", "salt-A", 0.7549471023699016),
    ("tok_9f8e7d", "salt-B", 0.4152644217092291),
    ("ü-card", "fraudstream", 0.390425020169282),
    ("card-000042", "2024-q2", 0.4618155317572193),
    ("x" * 64, "fraudstream", 0.040083489311685296),
    ("card-1", "fraudstream2", 0.0008886570886417483),
]


@pytest.mark.parametrize(("card_id", "salt", "expected"), GOLDEN)
def test_bucket_golden_values(card_id: str, salt: str, expected: float) -> None:
    assert bucket(card_id, salt) == expected


def test_bucket_range_and_separator() -> None:
    assert 0.0 <= bucket("a", "b") < 1.0
    assert bucket("bc", "a") != bucket("c", "ab")


def test_share_extremes() -> None:
    cards = [f"card-{i}" for i in range(2000)]
    assert set(assign_many(cards, "s", 0.0)) == {"champion"}
    assert set(assign_many(cards, "s", 1.0)) == {"challenger"}


def test_raising_the_share_only_moves_cards_to_the_challenger() -> None:
    rng = random.Random(7)
    cards = [f"tok-{rng.getrandbits(64):016x}" for _ in range(5000)]
    shares = sorted(rng.random() for _ in range(12))
    previous = assign_many(cards, "salt", 0.0)
    for share in shares:
        current = assign_many(cards, "salt", share)
        for before, after in zip(previous, current, strict=True):
            assert not (before == "challenger" and after == "champion")
        previous = current


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_share_of_many_cards_is_within_a_99_percent_binomial_interval(share: float) -> None:
    n = 100_000
    k = sum(v == "challenger" for v in assign_many((f"card-{i}" for i in range(n)), "fs", share))
    half = 2.5758293035489 * math.sqrt(n * share * (1 - share))
    assert abs(k - n * share) <= half


def test_changing_the_salt_reshuffles() -> None:
    cards = [f"card-{i}" for i in range(10_000)]
    a = assign_many(cards, "salt-1", 0.5)
    b = assign_many(cards, "salt-2", 0.5)
    moved = sum(x != y for x, y in zip(a, b, strict=True)) / len(cards)
    assert 0.45 < moved < 0.55  # independent halves disagree about half the time


def test_assign_is_stable() -> None:
    assert assign("card-1", "fraudstream", 0.81) == "challenger"  # bucket 0.8052...
    assert assign("card-1", "fraudstream", 0.80) == "champion"


def test_effective_roles() -> None:
    solo = Routing("v1")
    assert effective_roles(solo, "champion") == ("v1", None)
    assert effective_roles(solo, "challenger") == ("v1", None)
    ab = Routing("v1", "v2", 0.5)
    assert effective_roles(ab, "champion") == ("v1", None)
    assert effective_roles(ab, "challenger") == ("v2", None)
    shadow = Routing("v1", "v2", 0.5, shadow=True)
    assert effective_roles(shadow, "champion") == ("v1", "v2")
    assert effective_roles(shadow, "challenger") == ("v2", "v1")
    pure_shadow = Routing("v1", "v2", 0.0, shadow=True)
    assert effective_roles(pure_shadow, "champion") == ("v1", "v2")
    assert route(Routing("v1", challenger_share=0.0), "card-1") == ("champion", "v1", None)
    assert route(Routing("v1", "v2", 1.0, True), "card-1") == ("challenger", "v2", "v1")


@pytest.mark.parametrize(
    ("routing", "fragment"),
    [
        (Routing("v1", "v2", 1.5), "between 0 and 1"),
        (Routing("v1", "v2", -0.1), "between 0 and 1"),
        (Routing("v1", "v2", math.nan), "between 0 and 1"),
        (Routing("v1", None, 0.2), "no challenger"),
        (Routing("v1", "v1", 0.2), "same version"),
    ],
)
def test_validate_routing(routing: Routing, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        validate_routing(routing)


def test_valid_routings_pass() -> None:
    validate_routing(Routing("v1"))
    validate_routing(Routing("v1", "v2", 0.0, shadow=True))
    validate_routing(Routing("v1", "v2", 1.0))
