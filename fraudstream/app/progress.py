"""One INFO line every ``FRAUD_PROGRESS_INTERVAL_S``: what the worker did since the last line.

Rate, lag, decision latency (p50/p99 from the histogram's buckets), commits and API requests,
read from the worker's own Prometheus metrics, so the line and the dashboards never disagree.
Under a backlog this line is what INFO shows; per-commit and per-timer chatter stays at DEBUG
(``fraudstream.app.logs.Calm``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Metric

from fraudstream.app import metrics

log = logging.getLogger("fraudstream.progress")


def _samples(metric: object, suffix: str) -> Iterable[tuple[dict[str, str], float]]:
    collect: Callable[[], Iterable[Metric]] = metric.collect  # type: ignore[attr-defined]
    for family in collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample.labels, sample.value


def total(metric: object) -> float:
    """The sum of a counter's series (0 when it has none)."""
    return sum(v for _, v in _samples(metric, "_total"))


def buckets(metric: object) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets, summed over its label sets: [(upper bound, count)]."""
    out: dict[float, float] = {}
    for labels, value in _samples(metric, "_bucket"):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + value
    return sorted(out.items())


def quantile(q: float, before: list[tuple[float, float]], now: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of what a histogram observed between two snapshots of its buckets,
    interpolated inside its bucket as Prometheus' histogram_quantile does (NaN: none)."""
    was = dict(before)
    delta = [(le, n - was.get(le, 0.0)) for le, n in now]
    count = delta[-1][1] if delta else 0.0
    if count <= 0:
        return float("nan")
    rank = q * count
    lower, below = 0.0, 0.0
    for le, n in delta:
        if n >= rank:
            if le == float("inf"):
                return lower  # past the last finite bound: its bound is what is known
            inside = n - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, n
    return lower


@dataclass
class Snapshot:
    at: float
    decided: float
    commits: float
    commit_seconds: float
    api: float
    latency: list[tuple[float, float]]


def snapshot(at: float) -> Snapshot:
    from fraudstream.app import api  # its metrics live with it

    commit_sum = sum(v for _, v in _samples(metrics.TXN_COMMIT_SECONDS, "_sum"))
    return Snapshot(
        at=at,
        decided=total(metrics.TRANSACTIONS),
        commits=total(metrics.TXN_COMMITS),
        commit_seconds=commit_sum,
        api=total(api.API_REQUESTS),
        latency=buckets(metrics.DECISION_LATENCY),
    )


def lag(topic: str) -> int:
    return int(
        sum(v for labels, v in _samples(metrics.CONSUMER_LAG, "") if labels.get("topic") == topic)
    )


def line(before: Snapshot, now: Snapshot, lag_now: int) -> str:
    span = max(1e-9, now.at - before.at)
    decided = now.decided - before.decided
    commits = now.commits - before.commits
    p50 = quantile(0.5, before.latency, now.latency)
    p99 = quantile(0.99, before.latency, now.latency)
    latency = (
        "no decisions"
        if math.isnan(p99)  # nothing decided in the span
        else f"decision latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    mean_commit = (now.commit_seconds - before.commit_seconds) / commits if commits else 0.0
    return (
        f"progress: {decided:.0f} transactions in {span:.0f}s ({decided / span:.0f}/s), "
        f"lag {lag_now}, {latency}, {commits:.0f} commits (mean {mean_commit * 1000:.0f} ms), "
        f"{(now.api - before.api) / span:.0f} API requests/s"
    )


class ProgressLog:
    """Logs ``line`` at INFO each time ``tick`` is called (a Faust timer)."""

    def __init__(self, topic: str, clock: Callable[[], float]) -> None:
        self.topic = topic
        self.clock = clock
        self.last = snapshot(clock())

    def tick(self) -> str:
        now = snapshot(self.clock())
        text = line(self.last, now, lag(self.topic))
        self.last = now
        log.info("%s", text)
        return text
