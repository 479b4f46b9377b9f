"""CardStore: committed, sealed and pending per partition; commit folds, abort drops, drop
forgets."""

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
    store.seal(0)
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


def test_a_commit_carries_what_was_sealed_and_changes_meanwhile_wait_for_the_next() -> None:
    store = CardStore()
    store.load(0, [("a", rec(1))])
    store.put(0, "a", rec(2))
    store.seal(0)
    assert store.pending(0) == {}
    assert len(store.get(0, "a").seen) == 2  # type: ignore[union-attr]  # sealed, read
    store.put(0, "a", rec(3))  # decided while the commit runs
    store.put(0, "b", rec(1))
    assert len(store.get(0, "a").seen) == 3  # type: ignore[union-attr]
    store.commit(0)
    assert store.size(0) == 1  # "b" is not committed yet
    assert set(store.pending(0)) == {"a", "b"}
    store.abort(0)  # the next commit fails: back to what the first committed
    assert len(store.get(0, "a").seen) == 2  # type: ignore[union-attr]
    assert store.get(0, "b") is None


def test_an_abort_during_a_commit_drops_both_layers_and_unseal_merges_them() -> None:
    store = CardStore()
    store.load(0, [("a", rec(1))])
    store.put(0, "a", rec(2))
    store.put(0, "b", rec(2))
    store.seal(0)
    store.put(0, "a", rec(3))
    store.unseal(0)  # refused, still held: the next commit carries both, the newest wins
    assert {k: len(v.seen) for k, v in store.pending(0).items()} == {"a": 3, "b": 2}
    store.seal(0)
    store.put(0, "c", rec(1))
    store.abort(0)
    assert len(store.get(0, "a").seen) == 1  # type: ignore[union-attr]
    assert store.get(0, "b") is None
    assert store.get(0, "c") is None
