"""CardStore: committed vs pending per partition; commit folds, abort drops, drop forgets."""

from __future__ import annotations

import pytest

from fraudstream.core.cardstore import CardStore
from fraudstream.core.engine import CardRecord


def rec(n: int) -> CardRecord:
    return CardRecord(seen={f"t{i}": float(i) for i in range(n)})


def test_restore_applies_the_log_in_order_with_deletions() -> None:
    store = CardStore()
    assert store.load(3, [("a", rec(1)), ("b", rec(1)), ("a", rec(2)), ("b", None)]) == 1
    assert store.owns(3)
    got = store.get(3, "a")
    assert got is not None
    assert len(got.seen) == 2
    assert store.get(3, "b") is None


def test_pending_is_read_first_then_committed_or_dropped() -> None:
    store = CardStore()
    store.load(0, [("a", rec(1))])
    store.put(0, "a", rec(5))
    assert len(store.get(0, "a").seen) == 5  # type: ignore[union-attr]
    store.abort(0)
    assert len(store.get(0, "a").seen) == 1  # type: ignore[union-attr]
    store.put(0, "a", rec(7))
    store.put(0, "z", rec(1))
    assert set(store.pending(0)) == {"a", "z"}
    store.commit(0)
    assert store.pending(0) == {}
    assert len(store.get(0, "a").seen) == 7  # type: ignore[union-attr]
    assert store.size(0) == 2


def test_partitions_are_independent_and_drop_forgets() -> None:
    store = CardStore()
    store.load(0, [])
    store.load(1, [("a", rec(1))])
    store.put(0, "a", rec(3))
    store.abort(1)
    assert len(store.get(0, "a").seen) == 3  # type: ignore[union-attr]
    store.drop(0)
    assert store.partitions() == {1}
    assert store.pending(0) == {}
    with pytest.raises(KeyError):
        store.get(0, "a")
