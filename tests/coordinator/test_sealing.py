"""``coordinator.sealing``: what a commit carries is written and sealed in one step, for the
partitions and for a handler with a sealed layer; a refusal gives it back, an abort drops it."""

from __future__ import annotations

import asyncio

from fraudstream.coordinator import sealing
from fraudstream.coordinator.partition import PartitionState
from fraudstream.coordinator.ports import Send
from tests.coordinator.test_coordinator import Counting, rec
from tests.coordinator.test_coordinator_overlap import Layered
from tests.fakes import FakeWriters


def _open(handler: Counting, writers: FakeWriters, partition: int) -> PartitionState:
    asyncio.run(writers.open(partition))
    handler.restore(partition, [])
    return PartitionState(partition, committed=0, now=0.0)


def test_seal_writes_what_is_owed_and_changed_then_closes_both_layers() -> None:
    writers, handler = FakeWriters(), Layered()
    st = _open(handler, writers, 0)
    st.accept(rec(0, 0))
    handler.step([rec(0, 0)])
    handler.owes[0] = [Send(0, "marks", b"w", b"1")]
    sent: list[Send] = []
    assert sealing.seal([st], handler, writers, sent.extend, now=5.0) == {0: 1}
    assert [s.topic for s in sent] == ["marks"]
    assert writers.open_state[0] == [(b"k", b"1")]
    assert (handler.pending[0], handler.sealed[0]) == ({}, {b"k": 1})
    assert ([r.offset for r in st.sealed], st.inflight, st.began) == ([0], [], 5.0)


def test_a_refusal_gives_the_sealed_layer_back_and_an_abort_drops_both() -> None:
    writers, handler = FakeWriters(), Layered()
    st = _open(handler, writers, 0)
    st.accept(rec(0, 0))
    handler.step([rec(0, 0)])
    sealing.seal([st], handler, writers, lambda _s: None, now=1.0)
    st.accept(rec(0, 1))
    handler.step([rec(0, 1)])  # decided while the commit ran: on top of the sealed layer
    sealing.unseal(st, handler)
    assert ([r.offset for r in st.inflight], handler.pending[0]) == ([0, 1], {b"k": 2})
    sealing.seal([st], handler, writers, lambda _s: None, now=2.0)
    redo = sealing.aborted([st], handler)
    assert [r.offset for r in redo] == [0, 1]
    assert (handler.pending[0], handler.sealed[0], st.retrying) == ({}, {}, True)


def test_a_handler_without_a_sealed_layer_is_only_asked_for_its_changes() -> None:
    writers, handler = FakeWriters(), Counting()
    st = _open(handler, writers, 3)
    st.accept(rec(3, 0))
    handler.step([rec(3, 0)])
    assert sealing.seal([st], handler, writers, lambda _s: None, now=1.0) == {3: 1}
    assert handler.pending[3] == {b"k": 1}  # folded by ``committed``, as before
