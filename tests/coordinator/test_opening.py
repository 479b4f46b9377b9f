"""``coordinator.opening.open_partition`` on the in-memory writers of tests/fakes.py."""

from __future__ import annotations

import asyncio

import pytest

from fraudstream.coordinator import opening
from fraudstream.coordinator.ports import Restored
from fraudstream.errors import BrokerError, Fenced, PartitionUnavailable
from tests.fakes import FakeWriters


class Flaky(FakeWriters):
    """Fails the first ``fail`` opens as an unavailable broker does."""

    def __init__(self, fail: int, error: Exception | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.error = error or BrokerError("test: the broker is unavailable")

    async def open(self, partition: int) -> Restored:
        if self.fail:
            self.fail -= 1
            raise self.error
        return await super().open(partition)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_s: float) -> None:
        return None

    monkeypatch.setattr(opening.asyncio, "sleep", instant)


def test_an_unavailable_broker_is_retried_then_the_committed_state_restored() -> None:
    writers = Flaky(fail=2)
    writers.offsets[0] = 7
    got = asyncio.run(opening.open_partition(writers, 0, lambda _p: True))
    assert got is not None
    assert got.committed == 7
    assert writers.opened == [0]


def test_unavailable_for_every_attempt_is_a_typed_error() -> None:
    with pytest.raises(PartitionUnavailable, match="cannot open partition 3"):
        asyncio.run(opening.open_partition(Flaky(fail=99), 3, lambda _p: True))


def test_fenced_is_not_retried() -> None:
    writers = Flaky(fail=1, error=Fenced("test: a newer owner"))
    with pytest.raises(Fenced):
        asyncio.run(opening.open_partition(writers, 0, lambda _p: True))


def test_a_partition_given_away_before_or_while_it_opens_is_not_kept() -> None:
    writers = Flaky(fail=0)
    assert asyncio.run(opening.open_partition(writers, 0, lambda _p: False)) is None
    assert writers.opened == []  # never opened: nobody was fenced
    calls = iter([True, False])  # wanted when it starts, given away once it opened
    assert asyncio.run(opening.open_partition(writers, 1, lambda _p: next(calls))) is None
    assert writers.opened == [1]
    assert writers.closed == [1]
