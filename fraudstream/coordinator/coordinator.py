"""The coordinator: exactly-once per input partition, for whatever handler it runs.

For every owned partition of its input topic it keeps one ``PartitionState`` and one open
transaction (``Writers``). Records come in batches (``handle``); each partition's records are
checked against its next offset (a record delivered again is dropped, a hole that holds records
is fetched again), decided by the handler in one call per batch, and their outputs written into
their partition's transaction. Every ``commit_interval_s`` a partition's transaction is
committed in the background with its changed state and its next offset; while it commits, that
partition's new records wait and the others go on (at least once they are decided at once, into
the next commit: ``Writers.overlaps``, ``coordinator.sealing``). If Kafka aborts a transaction,
its records (and those decided while it ran) are decided again from the state they first saw.
Fatal conditions are raised as typed errors (``fraudstream.errors``), never handled by exiting:
a background task that fails is reported through ``spawn``, and the worker's supervisor decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from fraudstream import errors
from fraudstream.coordinator import opening, ordering, ports, requests, sealing
from fraudstream.coordinator.partition import PartitionState
from fraudstream.core.records import Record

log = logging.getLogger("fraudstream.coordinator")

R = TypeVar("R")
COMMIT_ATTEMPTS = 30
STEP_MAX = 1000  # records per handler step: a backlog that waited reaches the broker in steps


class Coordinator(Generic[R]):
    def __init__(
        self,
        *,
        handler: ports.PartitionHandler[R],
        writers: ports.Writers,
        source: ports.Source,
        observer: ports.Observer,
        spawn: ports.Spawn,
        fence: Callable[[], None],
        clock: ports.Clock,
        commit_interval_s: float,
    ) -> None:
        self.handler = handler
        self.writers = writers
        self.source = source
        self.observer = observer
        self.spawn = spawn
        self.fence = fence  # raises when writing now would be unsafe (a frozen process)
        self.clock = clock
        self.interval_s = commit_interval_s
        # Deciding while a partition commits needs both (at least once, ``sealing``).
        self.overlaps = writers.overlaps and isinstance(handler, ports.Sealing)
        self.partitions: dict[int, PartitionState] = {}
        self.opening: dict[int, asyncio.Task[None]] = {}
        self.assigned: set[int] = set()  # the latest assignment the group gave this worker
        self.lock = asyncio.Lock()
        self.closing = False  # the worker stops: no record is decided after the last commit
        self.requests = requests.Batcher(self._decide_requests, spawn)

    def close(self) -> None:
        """Decide nothing more except in ``commit_all``: the worker is stopping and its last
        commit follows. Records not decided are read again by the next owner."""
        self.closing = True

    # --- ownership --------------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self.partitions

    def position(self, partition: int) -> int | None:
        """The next offset to decide in ``partition`` (None: not owned, or nothing yet)."""
        st = self.partitions.get(partition)
        return None if st is None else st.next_offset

    def _wanted(self, partition: int) -> bool:
        return partition in self.assigned or self.source.assigned(partition)

    async def on_assigned(self, partitions: set[int]) -> None:
        """After a rebalance: let go of partitions given away (their last transaction was
        committed when they were revoked; what was decided since is aborted, for the new owner
        decides it again), and open new ones at once, so that a transaction a dead owner left
        open is aborted now rather than at its timeout."""
        self.assigned = set(partitions)
        async with self.lock:
            for p in sorted(set(self.partitions) - partitions):
                st = self.partitions.get(p)  # None: let go by a refused shared commit meanwhile
                if st is not None and st.committing is not None:
                    await asyncio.wait({st.committing})
                if st is not None and self.partitions.get(p) is st:  # (a fenced commit lets go)
                    await self._let_go(st, abort=st.has_work())
        for p in sorted(partitions):
            if p not in self.partitions and p not in self.opening:
                self.opening[p] = self.spawn(self._open(p), name=f"open-{p}")

    async def _ensure_open(self, partition: int) -> None:
        if partition in self.partitions:
            return
        task = self.opening.get(partition)
        if task is None:
            task = self.opening[partition] = self.spawn(
                self._open(partition), name=f"open-{partition}"
            )
        await asyncio.shield(task)

    async def _open(self, p: int) -> None:
        t0 = self.clock.monotonic()
        try:
            restored = await opening.open_partition(self.writers, p, self._wanted)
            if restored is None:
                return
            n = self.handler.restore(p, restored.state)
            self.partitions[p] = PartitionState(p, restored.committed, self.clock.monotonic())
            self.observer.opened(p, n, self.clock.monotonic() - t0)
        finally:
            self.opening.pop(p, None)

    async def _let_go(self, st: PartitionState, *, abort: bool) -> None:
        p = st.number
        if self.partitions.get(p) is st:
            del self.partitions[p]
        st.revoked()
        if abort:
            try:
                await self.writers.abort([p])
            except errors.BrokerError as exc:  # fenced by the new owner already: nothing to undo
                log.info("partition %d: %s", p, exc)
        self.handler.drop(p)
        await self.writers.close(p)
        self.observer.let_go(p)
        log.info("partition %d given away", p)

    # --- deciding ---------------------------------------------------------------------------

    async def handle(self, records: Sequence[Record]) -> None:
        """Decide ``records`` (fetched, in offset order per partition)."""
        if self.closing:
            return
        async with self.lock:
            mine: dict[int, None] = {}
            skipped: dict[int, list[int]] = {}
            for rec in records:
                p = rec.partition
                # A partition still held is decided even while a rebalance is under way:
                # skipping a record of it would let its next offset pass the record by. If it
                # turns out to be given away, its open transaction is aborted.
                if p in self.partitions or p in self.opening or self.source.assigned(p):
                    mine.setdefault(p)
                else:
                    skipped.setdefault(p, []).append(rec.offset)
            for p, offsets in skipped.items():
                self.observer.skipped(p, offsets)
            await asyncio.gather(*(self._ensure_open(p) for p in mine))
            for rec in records:
                st = self.partitions.get(rec.partition)
                if st is not None and rec.partition in mine:
                    st.waiting.append(rec)
            await self._drain([self.partitions[p] for p in mine if p in self.partitions])
            self._start_due()

    async def request(self, record: Record) -> R:
        """Decide one record not from the log (an API request) into its partition's open
        transaction, batched (``requests.Batcher``); its result, once that is committed."""
        while True:
            got = await self.requests.submit(record)  # refused (PartitionMoved) if stopping
            if isinstance(got, requests.Taken):
                break
            await asyncio.wait({got.running})
        st = got.state
        if got.acked is not None:
            # At least once: answered once the broker has the decision; the offset-less record
            # rides the next regular commit (its card record with it).
            await got.acked
        else:
            # Exactly once: answered once a commit has it. Requests share commits: those that
            # come while one runs wait for it, then share the next, started at once (waiting
            # for the regular interval halved the rate at 16 clients: 16 / latency is the rate).
            await asyncio.sleep(0)
            async with self.lock:
                mine = self.partitions.get(st.number) is st
                if mine and st.committing is None and not got.committed.done():
                    self._start_commit(self._group(st))
            await got.committed
        result: R = st.answers.pop(id(record))
        return result

    async def _decide_requests(self, batch: list[requests.Pending]) -> None:
        async with self.lock:
            live = requests.admitted(
                batch, self.closing, lambda p: p in self.partitions or self.source.assigned(p)
            )
            wanted = sorted({item.record.partition for item in live})
            opened = await asyncio.gather(
                *(self._ensure_open(p) for p in wanted), return_exceptions=True
            )
            taken = requests.accepted(
                live, self.partitions, dict(zip(wanted, opened, strict=True)), self.overlaps
            )
            if taken:
                self._decide([item.record for item, _ in taken])
                requests.answer(taken, requests.ensure_future(self.writers.delivered()))

    async def handle_side(self, records: Sequence[Record]) -> None:
        """Decide records of a second input (transactions moved to their card's partition) in
        their partition's open transaction, after any commit under way. Their position is kept
        in the handler's state, committed in that transaction (it drops what it decided). Those
        of partitions not held here are their owner's, read from its committed position."""
        by_partition: dict[int, list[Record]] = {}
        for rec in records:
            by_partition.setdefault(rec.partition, []).append(rec)
        for p, recs in by_partition.items():
            while True:
                async with self.lock:
                    st = self.partitions.get(p)
                    if st is None or self.closing:
                        break
                    running = st.busy(self.overlaps)
                    if running is None:
                        for rec in recs:
                            st.accept_side(rec)
                        self._decide(recs)
                        self._start_due()
                        break
                await asyncio.wait({running})

    async def wake(self) -> None:
        """Let the handler look again at the records it refused (a watermark moved)."""
        async with self.lock:
            await self._wake_parked()
            self._start_due()  # a partition that parked again commits at once

    async def _wake_parked(self) -> None:
        if self.closing:
            return
        parked = [st for st in self.partitions.values() if st.parked]
        for st in parked:
            st.parked = False
        await self._drain(parked)

    async def _drain(self, states: Sequence[PartitionState]) -> None:
        """Decide the waiting records of the partitions that can take records now."""
        batch: list[Record] = []
        for st in states:
            if st.can_take(self.overlaps) and st.waiting:
                batch.extend(st.waiting)
                st.waiting = []
        ready = await ordering.in_order(
            batch, self.partitions, self.handler, self.source, self.observer, self.clock
        )
        for i in range(0, len(ready), STEP_MAX):
            self._decide(ready[i : i + STEP_MAX])

    def _decide(self, records: Sequence[Record]) -> None:
        """Hand ``records`` (accepted into their partitions' open transactions) to the handler
        and write what it returns."""
        handled = self.handler.step(records)
        self.fence()  # the last moment before anything of this batch is written
        self._write(handled.sends)
        for p in handled.hurry:
            self.partitions[p].hurry = True
        for rec, result in zip(records, handled.results, strict=True):
            if not rec.from_log:
                self.partitions[rec.partition].answers[id(rec)] = result
        self.observer.decided(list(dict.fromkeys(r.partition for r in records)), len(records))

    def _write(self, sends: Sequence[ports.Send]) -> None:
        for s in sends:
            self.writers.send(s.partition, s.topic, s.key, s.value, s.headers, s.to_partition)
            self.partitions[s.partition].wrote()

    async def emit(self, make: Callable[[int], Sequence[ports.Send]]) -> None:
        """Write what ``make(partition)`` returns into each owned partition's open transaction,
        between batches (records that are not decisions of a record: watermarks). A partition
        that is committing is skipped; ``make`` is asked again next time."""
        async with self.lock:
            self.fence()
            for p, st in list(self.partitions.items()):
                if st.busy(self.overlaps) is None:
                    self._write(make(p))
            self._start_due()

    # --- committing -------------------------------------------------------------------------

    async def commit_due(self) -> None:
        """Timer: commit the transactions open for the interval; look at parked records again."""
        async with self.lock:
            await self._wake_parked()
            self._start_due()

    async def commit_all(self) -> None:
        """Commit every open transaction, waiting records too (before a rebalance or a stop)."""
        while True:
            running = {st.committing for st in self.partitions.values() if st.committing}
            if running:
                await asyncio.wait(running)
            async with self.lock:
                if any(st.committing for st in self.partitions.values()):
                    continue  # started while this waited for the lock: wait for it too
                states = list(self.partitions.values())
                await self._drain(states)
                await asyncio.gather(*(self._commit(g) for g in self._groups(states)))
                return

    def _group(self, st: PartitionState) -> list[PartitionState]:
        return list(self.partitions.values()) if self.writers.shared else [st]

    def _groups(self, states: Sequence[PartitionState]) -> list[list[PartitionState]]:
        """The partitions with work, as they commit together."""
        busy = [st for st in states if st.has_work()]
        if self.writers.shared:
            return [list(self.partitions.values())] if busy else []
        return [[st] for st in busy]

    def _start_due(self) -> None:
        now = self.clock.monotonic()
        due = [st for st in self.partitions.values() if st.due(now, self.interval_s)]
        if not due:
            return
        for group in [self._group(due[0])] if self.writers.shared else [[st] for st in due]:
            self._start_commit(group)

    def _start_commit(self, group: list[PartitionState]) -> asyncio.Task[None]:
        numbers = ",".join(str(st.number) for st in group)
        task = self.spawn(self._commit_in_background(group), name=f"commit-{numbers}")
        for st in group:
            st.committing = task
        return task

    async def _commit_in_background(self, group: list[PartitionState]) -> None:
        me = asyncio.current_task()
        try:
            await self._commit(group)
        finally:
            for st in group:
                if st.committing is me:
                    st.committing = None
        waiting = [st for st in group if st.waiting and self.partitions.get(st.number) is st]
        if waiting:
            # A task of its own: it takes the lock, which a caller waiting for this commit
            # (a rebalance) may hold.
            self.spawn(self._resume(waiting), name="resume")

    async def _given_away(self, group: list[PartitionState]) -> None:
        for st in group:
            if not self.source.assigned(st.number) and self.partitions.get(st.number) is st:
                await self._let_go(st, abort=False)

    async def _resume(self, states: list[PartitionState]) -> None:
        if self.closing:
            return
        async with self.lock:
            await self._drain([st for st in states if self.partitions.get(st.number) is st])
            self._start_due()

    async def _commit(self, group: list[PartitionState]) -> None:
        numbers = [st.number for st in group]
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            t0 = self.clock.monotonic()
            try:
                positions = sealing.seal(group, self.handler, self.writers, self._write, t0)
                events = sum(len(st.sealed) for st in group)
                await self.writers.commit(positions)
            except errors.Fenced as exc:
                # One still held: a zombie; but shared (at-least-once) writers commit all together:
                # a refusal moves no offset back, and the partitions still held commit next time.
                if not self.writers.shared and any(self.source.assigned(p) for p in numbers):
                    raise
                log.info("partitions %s: %s", numbers, exc)
                await self._given_away(group)
                for st in (st for st in group if self.partitions.get(st.number) is st):
                    sealing.unseal(st, self.handler)
                return
            except errors.TransactionAborted as exc:
                # The writers undid it and began the next transaction.
                self.observer.aborted(numbers)
                log.warning("%s (attempt %d)", exc, attempt)
                redo = sealing.aborted(group, self.handler)
                if redo:
                    self._decide(redo)  # from the state the records first saw
                await asyncio.sleep(min(5.0, 0.2 * attempt))  # Kafka may be restarting
                continue
            except errors.BrokerError:
                # A write refused: given away meanwhile (its new owner fenced it), else fatal.
                if any(self.source.assigned(p) for p in numbers):
                    raise
                await self._given_away(group)
                return
            seconds = self.clock.monotonic() - t0
            for st in group:
                self.handler.committed(st.number)
                st.committed()
            self.observer.committed(numbers, events, seconds)
            return
        raise errors.TransactionLost(
            f"partitions {numbers}: Kafka aborted {COMMIT_ATTEMPTS} transactions in a row"
        )
