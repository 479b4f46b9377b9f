"""Where Kafka's default partitioner (murmur2, as the Java client, aiokafka and librdkafka's
``murmur2_random`` compute it) puts a key: the partition the worker keeps a card's state in and
looks for a decision in."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


def home(key: bytes, partitions: int) -> int:
    """The partition murmur2 gives ``key`` among ``partitions``."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=1 << 17)
def _card_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def card_home(card_key: bytes, partitions: int) -> int:
    """``home`` for card keys, which repeat: checked for every transaction, and aiokafka's
    murmur2 is pure Python (about 13 µs a key on the shared 2-core machine), so cached.
    Transaction ids, which do not repeat, go through ``home``: they would only evict cards."""
    return _card_hash(card_key) % partitions
