"""At-least-once writers' bookkeeping of broker acknowledgements (``fraudstream.kafka.alo``):
a waiter is answered once everything sent before it is acknowledged, in whatever order the
deliveries come back, and fails once a delivery failed."""

from __future__ import annotations

import asyncio

import pytest

from fraudstream.errors import TransactionAborted
from fraudstream.kafka.alo import Acks, _settle_all


class Err:
    def str(self) -> str:
        return "Local: Message timed out"


def test_a_waiter_is_answered_once_everything_sent_before_it_is_acknowledged() -> None:
    async def body() -> None:
        acks = Acks()
        seqs = [acks.next() for _ in range(3)]
        first = acks.wait()
        later = acks.next()
        # Deliveries come back out of order across partitions.
        acks.done(seqs[2], None)
        acks.done(seqs[1], None)
        assert acks.ready() == []
        acks.done(seqs[0], None)
        _settle_all(acks.ready())
        assert first.done()
        assert first.result() is None
        assert acks.low == 3
        second = acks.wait()
        assert not second.done()
        acks.done(later, None)
        _settle_all(acks.ready())
        assert second.done()
        assert acks.wait().done()  # nothing outstanding: answered at once

    asyncio.run(body())


def test_a_failed_delivery_fails_the_waiters_until_it_is_cleared() -> None:
    async def body() -> None:
        acks = Acks()
        seq = acks.next()
        waiter = acks.wait()
        acks.done(seq, Err())  # type: ignore[arg-type]
        _settle_all(acks.ready())
        with pytest.raises(TransactionAborted, match="Message timed out"):
            waiter.result()
        failing = acks.wait()
        _settle_all(acks.ready())
        assert failing.done()
        assert isinstance(failing.exception(), TransactionAborted)
        acks.failure = None  # the commit that saw it decided its records again
        assert acks.wait().done()

    asyncio.run(body())
