from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from fraudstream.app.heap import YOUNG_THRESHOLD, Heap, Settler


@pytest.fixture
def heap() -> Iterator[Heap]:
    thresholds = gc.get_threshold()
    h = Heap()
    yield h
    h.uninstall()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def _pauses(generation: str) -> float:
    value = REGISTRY.get_sample_value(
        "fraudstream_gc_pause_seconds_count", {"generation": generation}
    )
    return value or 0.0


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_install_sets_thresholds_and_measures_pauses(heap: Heap) -> None:
    heap.install()
    heap.install()  # twice: one callback, one pause counted per pass
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    before = _pauses("1")
    gc.collect(1)
    assert _pauses("1") == before + 1
    heap.uninstall()
    gc.collect(1)
    assert _pauses("1") == before + 1


def test_settle_collects_cycles_then_freezes_the_rest(heap: Heap) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    dead = weakref.ref(a)
    del a, b
    kept = [_Node() for _ in range(100)]
    frozen = gc.get_freeze_count()
    heap.settle("test")
    assert dead() is None
    assert gc.get_freeze_count() >= frozen + len(kept)
    # Frozen: in no generation, so no pass walks it.
    assert not any(o is kept[0] for o in gc.get_objects())


def test_settler_waits_for_readiness_then_settles_once_per_model_set() -> None:
    settled: list[str] = []

    class FakeHeap(Heap):
        def settle(self, why: str) -> None:
            settled.append(why)

    ready = [False]
    models = [frozenset({1})]
    settler = Settler(FakeHeap(), lambda: ready[0], lambda: models[0])
    settler.tick()
    assert settled == []
    ready[0] = True
    settler.tick()
    settler.tick()
    assert settled == ["ready"]
    models[0] = frozenset({1, 2})  # a challenger loaded
    settler.tick()
    settler.tick()
    assert settled == ["ready", "models changed"]
