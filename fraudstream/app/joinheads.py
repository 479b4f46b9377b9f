"""The feedback join's ports (its tables and its input topics) and its own offsets' upkeep:
the join commits per partition one past the last record it handled, and checks the first hole
after an assignment or a seek before any commit passes it (``check_heads``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from fraudstream.app import metrics
from fraudstream.core.offsets import InOrderOffsets
from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import has_committed_records, log_start_offset
from fraudstream.kafka.groupoffsets import group_committed_offsets
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.join")

TopicPartition = tuple[str, int]


class JoinTable(Protocol):
    """A table whose entries live in a partition (its changelog's, next to its records)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


class JoinSource(Protocol):
    """The join's input topics as the consumer reads them."""

    def partitions(self, topic: str) -> int | None: ...

    def assigned(self, tp: TopicPartition) -> bool: ...

    async def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        """Stop fetching those of ``tps`` assigned."""

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        """Fetch them again (those a rebalance is recovering resume with it)."""


class JoinHeads:
    """Mixed into ``Join``: its offsets, checked and committable."""

    s: Settings
    source: JoinSource
    offsets: InOrderOffsets[TopicPartition]

    async def check_heads(self) -> None:
        """Before the join commits past the first record it got after an assignment or a
        seek, check the offsets between the group's committed offset and that record: commit
        markers only, or records Faust fetched and never delivered (it clears stream buffers
        when the flow resumes after a rebalance). Those are fetched again (the join is
        idempotent); the join's commits wait until then."""
        heads = self.offsets.to_verify()
        if not heads:
            return
        s = self.s
        run = asyncio.get_running_loop().run_in_executor
        tps = list(heads)
        try:
            committed = await run(None, group_committed_offsets, s, s.app_id, tps)
        except BrokerError as exc:  # the broker may be away; the next tick tries again
            log.warning("%s", exc)
            return
        for tp in tps:
            first, start = heads[tp], committed.get(tp)
            if start is None:  # never committed: the group reads the partition from its start
                try:
                    start = await run(None, log_start_offset, s, tp[0], tp[1])
                except BrokerError as exc:
                    log.warning("%s", exc)
                    continue
            if first <= start:
                self.offsets.verified(tp, first)
                continue
            if not await run(None, has_committed_records, s, tp[0], tp[1], start, first):
                self.offsets.verified(tp, first)
                continue
            log.warning(
                "%s[%d]: offsets %d..%d were never delivered; fetching them again",
                *tp,
                start,
                first - 1,
            )
            metrics.REFETCHES.inc()
            self.offsets.reset(tp)
            if self.source.assigned(tp):
                await self.source.seek(tp, start)

    def committable(self, tp: TopicPartition, committed: int | None) -> int | None:
        """The offset the consumer may commit for ``tp`` now (None: nothing to commit)."""
        return self.offsets.committable(tp, committed)
