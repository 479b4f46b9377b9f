"""Bounded join state: records of decisions past the retention horizon are deleted from the join
table, as tombstones in its changelog, so the live state stays within the horizon however long
the worker runs (real broker, real worker, a horizon of seconds)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fraudstream.core.messages import encode_transaction
from fraudstream.kafka.admin import changelog_topic, create_topics
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import fresh_settings, running_worker, wait_for

pytestmark = pytest.mark.integration

HORIZON_S = 3.0


def _changelog(s: Settings) -> tuple[int, int, int]:
    """(records, tombstones, live keys) of the decision-join changelog."""
    last: dict[bytes, bytes | None] = {}
    records = tombstones = 0
    for m in read_all(s, [changelog_topic(s, "decision-join")]):
        records += 1
        tombstones += m.value() is None
        last[m.key()] = m.value()
    return records, tombstones, sum(v is not None for v in last.values())


def _until(fn, want, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    got = fn()
    while not want(got) and time.monotonic() < deadline:
        time.sleep(1.0)
        got = fn()
    return got


def test_join_records_past_the_horizon_are_deleted_and_the_live_state_stays_bounded(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = fresh_settings(kafka_bootstrap, partitions=2)
    create_topics(s)  # the topics' retention as usual; the worker's horizon is seconds
    events = list(generate(SimConfig(seed=21, n_cards=100), n=120))
    waves = [events[:60], events[60:]]
    with running_worker(
        s, tmp_path, decision_retention_days=HORIZON_S / 86400, join_prune_seconds=1.0
    ) as w:
        p = make_producer(s)
        decided = 0
        for i, wave in enumerate(waves, 1):
            for e in wave:
                p.produce(
                    s.topic_transactions, key=e.tx.card_id.encode(), value=encode_transaction(e.tx)
                )
            assert p.flush(30) == 0
            decided += len(wave)
            assert len(wait_for(s, [s.topic_decisions], decided)) == decided
            # Every decision got its join record, and each is deleted once past the horizon.
            records, tombstones, live = _until(
                lambda: _changelog(s), lambda c, n=decided: c[1] >= n and c[2] == 0
            )
            assert (tombstones, live) == (decided, 0), f"wave {i}: {records} records"
            assert records >= 2 * decided  # a record and its tombstone each
        _, text = w.get("/metrics")
        assert "fraudstream_join_pruned_total 120.0" in text
