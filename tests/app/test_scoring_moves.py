"""Transactions off their card's murmur2 partition: moved through the repartition topic in the
transaction of their input offset, decided in the card's partition with its state, each once
(the handler keeps the repartition position in the partition's changelog); the murmur2 case
takes no extra hop (scoring handler behind the real coordinator, on tests/fakes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import REGISTRY

from fraudstream.app.partitioning import home
from fraudstream.app.scoring import MOVED_POSITION, ScoringHandler
from fraudstream.app.serving import ServingManager
from fraudstream.core.messages import decode_decision
from fraudstream.core.records import Record
from fraudstream.settings import Settings
from tests.app.conftest import tx_bytes
from tests.fakes import FakeWriters, make_coordinator, record

N = 2


def card_in(partition: int, tag: str) -> str:
    return next(
        f"card-{tag}-{i}" for i in range(999) if home(f"card-{tag}-{i}".encode(), N) == partition
    )


class Rig:
    def __init__(self, settings: Settings, serving: ServingManager, writers: FakeWriters) -> None:
        self.s = settings
        self.handler = ScoringHandler(settings, serving, lambda: N)
        self.c, self.writers, _, self.observer, _, self.tasks = make_coordinator(
            self.handler, writers=writers, interval_s=10.0
        )

    async def open(self, partition: int) -> None:
        """Take ``partition`` (the reader of moved records reads open partitions only)."""
        await self.c.on_assigned({*self.c.partitions, partition})
        while not self.c.owns(partition):
            await asyncio.sleep(0.01)

    def moved(self) -> list[Record]:
        """What a reader of the repartition topic sees, as its records (offsets in order)."""
        sent = self.writers.seen(self.s.topic_transactions_repartition)
        return [
            record(
                home(s.key or b"", N),
                i,
                s.value,
                s.key,
                topic=self.s.topic_transactions_repartition,
            )
            for i, s in enumerate(sent)
        ]

    def decided(self) -> list[str]:
        return [
            decode_decision(s.value).transaction_id
            for s in self.writers.seen(self.s.topic_decisions)
            if s.value
        ]


def run(
    settings: Settings,
    serving: ServingManager,
    body: Callable[[Rig], Coroutine[Any, Any, None]],
    writers: FakeWriters | None = None,
) -> None:
    async def main() -> None:
        rig = Rig(settings, serving, writers or FakeWriters())
        await body(rig)
        rig.tasks.check()

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def moved_total() -> float:
    return REGISTRY.get_sample_value("fraudstream_transactions_moved_total") or 0.0


def test_a_transaction_off_its_partition_moves_and_is_decided_in_its_card_s(
    settings: Settings, serving: ServingManager
) -> None:
    async def body(r: Rig) -> None:
        here, there = card_in(0, "h"), card_in(1, "t")
        before = moved_total()
        await r.c.handle(
            [
                record(0, 0, tx_bytes("tx-1", here), here.encode()),
                record(0, 1, tx_bytes("tx-2", there), there.encode()),  # CRC32 put it here
            ]
        )
        await r.c.commit_all()
        assert r.decided() == ["tx-1"]  # the murmur2 one at once, no hop
        [m] = r.writers.seen(r.s.topic_transactions_repartition)
        assert (m.key, m.value) == (there.encode(), tx_bytes("tx-2", there))
        assert m.headers == {
            "origin.topic": "transactions",
            "origin.partition": "0",
            "origin.offset": "1",
        }
        assert r.writers.offsets == {0: 2}  # the move and the offset, one transaction
        assert moved_total() - before == 1
        # Back through the repartition topic: decided in partition 1, with that card's state.
        await r.open(1)
        await r.c.handle_side(r.moved())
        await r.c.commit_all()
        assert r.decided() == ["tx-1", "tx-2"]
        assert r.handler.store.get(1, there) is not None
        assert r.handler.moved_position(1) == 1
        assert (MOVED_POSITION, b"1") in r.writers.changelog[1]

    run(settings, serving, body)


def test_moved_transactions_are_decided_once_through_aborts_redelivery_and_a_new_owner(
    settings: Settings, serving: ServingManager
) -> None:
    writers = FakeWriters()
    card = card_in(1, "m")
    side = settings.topic_transactions_repartition

    def moved(offset: int) -> Record:
        return record(1, offset, tx_bytes(f"tx-m{offset}", card), card.encode(), topic=side)

    async def first_owner(r: Rig) -> None:
        await r.open(1)
        await r.c.handle_side([moved(0), moved(1)])
        r.writers.fail_commits = 1  # aborted: decided again from memory, once
        await r.c.commit_all()
        await r.c.handle_side([moved(1), moved(2)])  # 1 again: a reader that re-read
        await r.c.commit_all()
        await r.c.handle_side([moved(3)])  # decided, never committed: this owner dies
        assert r.decided() == ["tx-m0", "tx-m1", "tx-m2"]

    async def second_owner(r: Rig) -> None:
        await r.open(1)
        assert r.handler.moved_position(1) == 3  # where its reader starts
        await r.c.handle_side([moved(2), moved(3)])  # 2 again (a reader from further back)
        await r.c.commit_all()
        assert r.decided() == ["tx-m0", "tx-m1", "tx-m2", "tx-m3"]
        state = r.handler.store.get(1, card)
        assert state is not None
        assert state.state is not None
        assert state.state.n == 4  # the card saw each of them once

    run(settings, serving, first_owner, writers)
    run(settings, serving, second_owner, writers)
