"""The restart scenarios (fraudstream/faults/restarts.py): the worker SIGTERMed or SIGKILLed and
started again, exactly once and at least once; the broker SIGKILLed and restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstream.faults import restarts
from fraudstream.settings import Settings
from tests.faults.checks import at_least_once, check

pytestmark = pytest.mark.integration


# --- CI ---------------------------------------------------------------------------------------


def test_sigterm_restart(broker_settings: Settings, tmp_path: Path) -> None:
    check(restarts.sigterm_restart(broker_settings, tmp_path), no_duplicates=True)


def test_sigkill_once(broker_settings: Settings, tmp_path: Path) -> None:
    check(restarts.sigkill(broker_settings, tmp_path, kills=1, n=2400), no_duplicates=True)


def test_sigkill_once_with_the_crc32_producer(broker_settings: Settings, tmp_path: Path) -> None:
    """Most transactions off their card's murmur2 partition: the move and the decision in the
    card's partition are each exactly once through a SIGKILL."""
    row = restarts.sigkill(
        broker_settings, tmp_path, kills=1, n=1800, seed=4, partitioner="consistent_random"
    )
    check(row, no_duplicates=True)


def test_sigterm_restart_at_least_once(broker_settings: Settings, tmp_path: Path) -> None:
    """At least once, a graceful stop commits what it delivered: nothing decided twice."""
    row = restarts.sigterm_restart(at_least_once(broker_settings), tmp_path)
    row.scenario += " (at_least_once)"
    check(row, no_duplicates=True)


def test_sigkill_once_at_least_once(broker_settings: Settings, tmp_path: Path) -> None:
    """At least once, a SIGKILL loses nothing; what was decided since the last commit is
    decided again (duplicates with the same key, counted and documented, not asserted)."""
    row = restarts.sigkill(at_least_once(broker_settings), tmp_path, kills=1, n=2400)
    row.scenario += " (at_least_once)"
    row.notes = f"{row.duplicated} decisions twice (same key); {row.notes}"
    check(row, no_duplicates=False)


# --- make faults ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_three_times(broker_settings: Settings, tmp_path: Path) -> None:
    check(restarts.sigkill(broker_settings, tmp_path, kills=3, n=6000), no_duplicates=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_broker_killed_and_restarted(broker_settings: Settings, tmp_path: Path) -> None:
    # A broker of its own: the session broker is shared by the other tests.
    check(restarts.broker_restart(broker_settings, tmp_path), no_duplicates=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_three_times_at_least_once(broker_settings: Settings, tmp_path: Path) -> None:
    row = restarts.sigkill(at_least_once(broker_settings), tmp_path, kills=3, n=6000)
    row.scenario += " (at_least_once)"
    row.notes = f"{row.duplicated} decisions twice (same key); {row.notes}"
    check(row, no_duplicates=False)
