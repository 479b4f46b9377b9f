"""The periodic progress line (issue 19): rate, lag, latency quantiles from the worker's own
metrics, between two snapshots."""

from __future__ import annotations

import logging
import math

import pytest

from fraudstream.app import metrics, progress


def test_quantile_interpolates_inside_its_bucket_between_two_snapshots() -> None:
    before = [(0.01, 10.0), (0.1, 10.0), (1.0, 10.0), (math.inf, 10.0)]
    # 100 more observations: 50 under 10 ms, 49 in (10, 100] ms, 1 in (100 ms, 1 s].
    now = [(0.01, 60.0), (0.1, 109.0), (1.0, 110.0), (math.inf, 110.0)]
    assert progress.quantile(0.5, before, now) == pytest.approx(0.01)
    assert progress.quantile(0.99, before, now) == pytest.approx(0.1)
    assert 0.01 < progress.quantile(0.9, before, now) < 0.1
    assert math.isnan(progress.quantile(0.99, now, now))


def test_past_the_last_finite_bucket_the_bound_is_what_is_known() -> None:
    now = [(0.01, 0.0), (1.0, 0.0), (math.inf, 5.0)]
    assert progress.quantile(0.99, [], now) == 1.0


def test_the_line_reports_what_happened_since_the_last_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [100.0]
    log = progress.ProgressLog("transactions-progress-test", lambda: clock[0])
    metrics.TRANSACTIONS.inc(300)
    for _ in range(300):
        metrics.DECISION_LATENCY.observe(0.004)
    metrics.CONSUMER_LAG.labels("transactions-progress-test", "0").set(7)
    metrics.CONSUMER_LAG.labels("transactions-progress-test", "1").set(5)
    clock[0] = 110.0
    with caplog.at_level(logging.INFO, logger="fraudstream.progress"):
        text = log.tick()
    assert "300 transactions in 10s (30/s)" in text
    assert "lag 12" in text
    assert "p99 5 ms" in text
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    clock[0] = 120.0
    assert "0 transactions in 10s (0/s)" in log.tick()
    assert "no decisions" in log.tick()
