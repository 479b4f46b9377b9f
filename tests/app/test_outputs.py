"""The join's producer batches: a Barrier is done once every record in it is acknowledged, and
remembers the first refusal (``Output.flush`` then raises ``OutputRefused``)."""

from __future__ import annotations

import asyncio

import pytest

from fraudstream.app.outputs import Barrier, Output
from fraudstream.errors import OutputRefused


class Refusal:
    def __str__(self) -> str:
        return "MSG_SIZE_TOO_LARGE"


def test_a_barrier_is_done_when_closed_and_every_record_is_acknowledged() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        empty = Barrier().close(loop)
        assert empty.is_done()
        b = Barrier()
        b.add()
        b.add()
        b(None, None)
        b.close(loop)
        assert not b.is_done()
        b(None, None)  # the delivery thread acknowledges the last one
        await asyncio.wait_for(b.wait(), 1)
        assert b.failed is None

    asyncio.run(body())


def test_a_refused_record_makes_the_flush_raise() -> None:
    class Refused(Output):
        def __init__(self) -> None:  # no producer: the barrier is fed by hand below
            self._barrier = Barrier()

    async def body() -> None:
        out = Refused()
        out._barrier.add()  # noqa: SLF001 - what send() does
        out._barrier(Refusal(), None)  # noqa: SLF001 - what the delivery callback does
        with pytest.raises(OutputRefused, match="MSG_SIZE_TOO_LARGE"):
            await out.flush()

    asyncio.run(body())
