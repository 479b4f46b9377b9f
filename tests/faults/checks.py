"""The fault suite (issue 7): real worker processes, a real broker, simulator load; counted by
``fraudstream.faults.verifier`` against what the producer acknowledged. One test module per
scenario module of ``fraudstream.faults``; here what they all assert.

Unmarked scenarios run in CI (`make test`); ``slow`` ones with `make faults`, which also renders
the results table into docs/faults.md. Every run records its row before asserting, so a failing
scenario still leaves its figures in the results file.

Asserted everywhere: nothing lost, nothing duplicated, no phantom decision, the worker group's
final lag is 0 (exactly-once: per-partition Kafka transactions with fencing, README "Delivery
guarantee"). The one documented exception, a replay of ids older than the event-time dedup
window, is measured and not asserted.
"""

from __future__ import annotations

from fraudstream import faults
from fraudstream.faults.load import Row, dump
from fraudstream.settings import Settings


def check(row: Row, *, no_duplicates: bool) -> None:
    faults.record(row.as_dict())
    print(dump(row))
    assert row.lost == 0, row.samples
    assert row.phantom == 0, row.samples
    assert row.final_lag == 0, row.samples
    if no_duplicates:
        assert row.duplicated == 0, row.samples


def at_least_once(settings: Settings) -> Settings:
    return settings.model_copy(update={"processing_guarantee": "at_least_once"})
