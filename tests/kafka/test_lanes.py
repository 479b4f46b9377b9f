"""A partition's lane: one long-lived thread runs its blocking calls in order; a call that
does not return in time is given up."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from fraudstream.kafka import lanes
from fraudstream.kafka.lanes import Lane, Lanes, Stuck


def test_calls_run_in_order_on_one_thread_that_is_not_the_callers() -> None:
    ran: list[tuple[int, int]] = []
    done = threading.Event()
    lane = Lane("test-lane")
    for i in range(5):
        lane.submit(lambda i=i: ran.append((i, threading.get_ident())))
    lane.submit(done.set)
    assert done.wait(5)
    assert [i for i, _ in ran] == [0, 1, 2, 3, 4]
    assert len({ident for _, ident in ran}) == 1
    assert ran[0][1] != threading.get_ident()
    lane.retire()


def test_a_retired_lane_ends_after_the_calls_already_submitted() -> None:
    release = threading.Event()
    ran: list[str] = []
    lane = Lane("test-lane-retired")
    lane.submit(lambda: (release.wait(5), ran.append("first")))
    lane.submit(lambda: ran.append("second"))
    lane.retire()
    [thread] = [t for t in threading.enumerate() if t.name == "test-lane-retired"]
    assert thread.is_alive()  # busy with the first call
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert ran == ["first", "second"]


# --- Lanes: the partitions' lanes and a call given up --------------------------------------


def test_a_call_given_up_that_returns_later_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """How long a stuck call really took is what tells a bound too short from a real hang."""
    monkeypatch.setattr(lanes, "STUCK_S", 0.1)
    calls = Lanes("test-lanes-late")
    release = threading.Event()

    async def body() -> None:
        with pytest.raises(Stuck):
            await calls.call(0, release.wait, 5)

    with caplog.at_level(logging.WARNING, logger="fraudstream.txn"):
        asyncio.run(body())
        [thread] = [t for t in threading.enumerate() if t.name == "test-lanes-late-0"]
        release.set()
        thread.join(5)
    calls.retire_all()
    [late] = [r.getMessage() for r in caplog.records]
    assert "given up as stuck returned after" in late
    assert late.endswith("(ok)")


def test_what_the_call_raises_reaches_the_caller_and_the_lane_goes_on() -> None:
    calls = Lanes("test-lanes-raise")

    def fails() -> None:
        raise TimeoutError("the call's own timeout")  # not mistaken for the wait's

    async def body() -> None:
        with pytest.raises(TimeoutError, match="own timeout"):
            await calls.call(3, fails)
        await asyncio.wait_for(calls.call(3, lambda: None), 5)

    asyncio.run(body())
    calls.retire_all()
