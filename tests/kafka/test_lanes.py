"""A partition's lane: one long-lived thread runs its blocking calls in order."""

from __future__ import annotations

import threading

from fraudstream.kafka.lanes import Lane


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
