"""What the report and the export read: the latest outcomes, then the decisions of a window.

``fraud.outcomes`` is read whole (labelled transactions only, kept for the decision-retention
horizon: as long as a label can still change one).
``fraud.decisions`` is read from ``since`` (by broker timestamp, a few minutes early to be safe)
to its current end; it keeps a week by default, so the reader also works out from when it holds
*every* decision (``complete_from``): rates over all decisions use only that part.
"""

from __future__ import annotations

from collections.abc import Iterator

from fraudstream.core.ledger import OutcomeKey, Row, join_rows, latest_outcomes, parse_ts
from fraudstream.core.messages import Decision, Outcome, decode_decision, decode_outcome
from fraudstream.errors import InvalidMessage
from fraudstream.kafka.clients import ReadPlan, iter_committed
from fraudstream.settings import Settings

SEEK_SLACK_S = 300.0  # broker timestamps trail decided_at by the commit interval, not minutes


def load_latest_outcomes(settings: Settings) -> dict[OutcomeKey, Outcome]:
    def decoded() -> Iterator[Outcome]:
        topics = [settings.topic_outcomes]
        for msg in iter_committed(settings, topics, timeout=None, strict=True, idle=0.0):
            try:
                yield decode_outcome(msg.value())
            except InvalidMessage:
                continue  # the worker writes valid outcomes; anything else is not ours to count

    return latest_outcomes(decoded())


class DecisionReader:
    """Decisions from ``since`` to ``until`` (POSIX s; None: all retained), by broker timestamp
    with a few minutes' margin; ``complete_from`` once read."""

    def __init__(self, settings: Settings, since: float | None, until: float | None) -> None:
        self.settings = settings
        self.since = since
        self.until = until
        self.plan: ReadPlan = {}
        self.first_decided: dict[int, float] = {}
        self.skipped = 0

    def __iter__(self) -> Iterator[Decision]:
        since_ms = None if self.since is None else int((self.since - SEEK_SLACK_S) * 1000)
        until_ms = None if self.until is None else int((self.until + SEEK_SLACK_S) * 1000)
        for msg in iter_committed(
            self.settings,
            [self.settings.topic_decisions],
            timeout=None,
            strict=True,
            since_ms=since_ms,
            until_ms=until_ms,
            plan=self.plan,
            idle=0.0,
        ):
            try:
                d = decode_decision(msg.value())
            except InvalidMessage:
                self.skipped += 1
                continue
            p = int(msg.partition() or 0)
            if p not in self.first_decided:
                self.first_decided[p] = parse_ts(d.decided_at) or 0.0
            yield d

    @property
    def complete_from(self) -> float | None:
        """From when every decision was read (None: nothing is missing).

        A partition misses nothing when nothing was ever deleted from it (low watermark 0) or
        when the seek to ``since`` landed past its first retained record. Otherwise retention
        has deleted what came before the first record read: complete from that one's decision
        time. The latest such time over the partitions holds for the topic.
        """
        bounds = [
            self.first_decided[p]
            for (_, p), (low, start, high) in self.plan.items()
            if low > 0 and start == low and high > low and p in self.first_decided
        ]
        return max(bounds) if bounds else None


def read_rows(
    settings: Settings,
    outcomes: dict[OutcomeKey, Outcome],
    since: float | None,
    until: float | None,
) -> tuple[Iterator[Row], DecisionReader]:
    """Rows of every decision in [since, until] (and a margin: filter by ``decided_at``) and of
    every outcome whose decision was not read. ``outcomes``: from load_latest_outcomes.

    Iterate the rows first; the reader's ``complete_from`` is known once they are consumed."""
    reader = DecisionReader(settings, since, until)
    return join_rows(reader, outcomes), reader
