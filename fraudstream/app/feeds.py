"""Records diverted from Faust's consumer (``faust_boundary.Hooks``), in batches, to a
coordinator: the scoring path's and the entity aggregator's."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.core.records import Record

R = TypeVar("R")

#: The take window of the Faust agents that only subscribe a diverted topic: their streams get
#: no record, and a short window woke each of them every 5 ms for nothing.
IDLE_TAKE_S = 1.0


def as_record(message: Any) -> Record:
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        message.timestamp,
    )


async def decide_batches(
    feed: asyncio.Queue[list[Record]], coordinator: Coordinator[R], batch_size: int
) -> None:
    """Decide what the boundary feeds, in batches of at most ``batch_size``. A failure here is
    a bug, not bad input (that is dead-lettered): it goes to the supervisor."""
    pending: list[Record] = []
    while True:
        if not pending:
            pending = await feed.get()
        while len(pending) < batch_size and not feed.empty():
            pending.extend(feed.get_nowait())
        batch, pending = pending[:batch_size], pending[batch_size:]
        await coordinator.handle(batch)
