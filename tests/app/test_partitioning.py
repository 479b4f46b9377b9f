"""murmur2 partitions as Kafka's default partitioner computes them, cached for card keys."""

from __future__ import annotations

from fraudstream.app.partitioning import _card_hash, card_home, home

# Partitions the Java client's default partitioner gives these keys among 4 and 12 partitions
# (Utils.toPositive(Utils.murmur2(key)) % n; murmur2("21") = -973932308, murmur2("foobar") =
# -790332482, from Kafka's UtilsTest).
KNOWN = {b"21": -973932308, b"foobar": -790332482}


def test_home_is_kafka_s_default_partition() -> None:
    for key, java in KNOWN.items():
        for n in (4, 12):
            assert home(key, n) == (java & 0x7FFFFFFF) % n


def test_card_home_is_home_and_cached() -> None:
    _card_hash.cache_clear()
    keys = [f"card-{i}".encode() for i in range(200)]
    assert [card_home(k, 7) for k in keys] == [home(k, 7) for k in keys]
    assert [card_home(k, 7) for k in keys] == [home(k, 7) for k in keys]
    assert _card_hash.cache_info().hits == len(keys)
