"""The demo's live latencies (issue 19 item 5): appended and seen by its read_committed reader,
per decision, from the transaction's CreateTime."""

from __future__ import annotations

import pytest

from fraudstream.demo import Latencies


def test_each_decision_is_timed_from_its_transaction_appended_and_seen() -> None:
    lat = Latencies(window=100)
    for i in range(100):
        lat.transaction(f"t{i}", 1000.0 + i)
    for i in range(100):
        # appended 10 ms after its transaction; seen 60 ms after, the last one 200 ms after
        seen = 0.2 if i == 99 else 0.06
        lat.decision(f"t{i}", 1000.0 + i + 0.01, 1000.0 + i + seen)
    assert lat.quantiles(lat.appended, (0.5, 0.99)) == pytest.approx([0.01, 0.01])
    assert lat.quantiles(lat.seen, (0.5, 0.99)) == pytest.approx([0.06, 0.2])
    lat.decision("unknown", 1.0, 2.0)  # a decision of a transaction it never saw: not counted
    assert len(lat.seen) == 100
    assert lat.created == {}


def test_transactions_never_decided_are_forgotten_past_the_pending_limit() -> None:
    lat = Latencies(pending=3)
    for i in range(5):
        lat.transaction(f"t{i}", float(i))
    assert list(lat.created) == ["t2", "t3", "t4"]
    assert lat.quantiles(lat.seen, (0.5,)) == [None]
