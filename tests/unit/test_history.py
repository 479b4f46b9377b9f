"""From when fraud.decisions held every decision, given where each partition was read from."""

from __future__ import annotations

from fraudstream.kafka.history import DecisionReader
from fraudstream.settings import Settings


def _reader(plan: dict, first: dict, since: float | None = None) -> DecisionReader:
    r = DecisionReader(Settings(_env_file=None), since, None)  # type: ignore[call-arg]
    r.plan = plan
    r.first_decided = first
    return r


def test_nothing_deleted_means_complete() -> None:
    assert (
        _reader({("d", 0): (0, 0, 10), ("d", 1): (0, 0, 5)}, {0: 100.0, 1: 50.0}).complete_from
        is None
    )


def test_retention_deleted_the_start_of_a_partition() -> None:
    plan = {("d", 0): (0, 0, 10), ("d", 1): (7, 7, 20), ("d", 2): (3, 3, 9)}
    r = _reader(plan, {0: 100.0, 1: 250.0, 2: 180.0})
    assert r.complete_from == 250.0  # the latest first record of a partition that lost some


def test_a_seek_past_the_retained_start_misses_nothing() -> None:
    plan = {("d", 0): (7, 12, 20), ("d", 1): (0, 4, 9)}
    assert _reader(plan, {0: 300.0, 1: 290.0}, since=280.0).complete_from is None
    # An emptied partition (everything deleted, nothing read) cannot say anything.
    assert _reader({("d", 0): (9, 9, 9)}, {}).complete_from is None
