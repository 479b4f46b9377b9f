"""Opening a partition this worker was given: its writers fence any earlier owner and restore
what was committed, retried while the broker is unavailable; a partition given away meanwhile
is closed again, not kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fraudstream import errors
from fraudstream.coordinator import ports

log = logging.getLogger("fraudstream.coordinator")

OPEN_ATTEMPTS = 10


async def open_partition(
    writers: ports.Writers, p: int, wanted: Callable[[int], bool]
) -> ports.Restored | None:
    """The partition's committed state and position; None when it was given away before or
    while it opened (then nothing of it is kept open)."""
    restored: ports.Restored | None = None
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        if not wanted(p):
            return None  # given away before this worker fenced anyone
        try:
            restored = await writers.open(p)
            break
        except errors.Fenced:
            raise
        except errors.BrokerError as exc:
            if attempt == OPEN_ATTEMPTS:
                raise errors.PartitionUnavailable(f"cannot open partition {p}: {exc}") from exc
            log.warning("opening partition %d: %s; retrying", p, exc)
            await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
    if not wanted(p):
        await writers.close(p)
        log.info("partition %d was given away while it opened", p)
        return None
    return restored
