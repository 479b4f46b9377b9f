"""The bad-input scenario (fraudstream/faults/bad_input.py): the corpus under load, scoring-time
failures and a replay older than the dedup window."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstream import faults
from fraudstream.faults import bad_input
from fraudstream.settings import Settings
from tests.faults.checks import check

pytestmark = pytest.mark.integration


# --- CI ---------------------------------------------------------------------------------------


def test_bad_input_corpus_under_load(broker_settings: Settings, tmp_path: Path) -> None:
    row, nan_row, late_row = bad_input.bad_input(broker_settings, tmp_path)
    faults.record(nan_row.as_dict())
    faults.record(late_row.as_dict())
    check(row, no_duplicates=True)
    want = dict(x.split("=") for x in row.samples["expected_reasons"])
    for reason, count in want.items():
        assert row.reasons.get(reason, 0) >= int(count), (reason, row.reasons)
    # Scoring-time failures: dead-lettered with their reason, not decided, not skipped.
    assert nan_row.events > 0
    assert nan_row.lost == 0
    assert nan_row.dead_lettered == nan_row.events, nan_row.notes
    assert nan_row.samples["decided"] == ["0"]
    # A replay older than the event-time dedup window may be decided again (by design), but
    # nothing of it is lost.
    assert late_row.lost == 0
