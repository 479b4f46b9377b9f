"""What a commit carries: when it begins, the owed records and changed state are written and
the partitions' records and the handler's state sealed (``PartitionState.seal``,
``ports.Sealing``); what is decided after that belongs to the next commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fraudstream.coordinator import ports
from fraudstream.coordinator.partition import PartitionState
from fraudstream.core.records import Record


def seal(
    group: Sequence[PartitionState],
    handler: ports.PartitionHandler[Any],
    writers: ports.Writers,
    write: Callable[[Sequence[ports.Send]], None],
    now: float,
) -> dict[int, int | None]:
    """Write what the group's commit carries and close it; the positions to commit."""
    positions: dict[int, int | None] = {}
    for st in group:
        write(handler.owed(st.number))
        for key, value in handler.changes(st.number):
            writers.keep(st.number, key, value)
        if isinstance(handler, ports.Sealing):
            handler.seal(st.number)
        positions[st.number] = st.seal(now)
    return positions


def unseal(st: PartitionState, handler: ports.PartitionHandler[Any]) -> None:
    """The commit was refused, the partition still held: the next one carries it all."""
    st.unseal()
    st.retrying = False
    if isinstance(handler, ports.Sealing):
        handler.unseal(st.number)


def aborted(group: Sequence[PartitionState], handler: ports.PartitionHandler[Any]) -> list[Record]:
    """Kafka aborted the commit: both layers are dropped; returns the records of both, to
    decide again. The partitions take no more records until it commits (``retrying``)."""
    redo: list[Record] = []
    for st in group:
        handler.aborted(st.number)
        redo += st.unseal()
        st.retrying = True
    return redo
