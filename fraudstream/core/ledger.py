"""Decisions joined with their outcomes: one row per transaction and model version.

The record analysts get (``fraudstream outcomes export``) and the report counts: a deciding
model's row for every decision, a ``shadow`` row for every shadow score, each with its label
and outcome once the feedback join has one. Rows come from ``fraud.decisions`` (every decision
still retained there) and, for decisions no longer read from it, from ``fraud.outcomes`` alone
(labelled ones only: an outcome carries the card, the decision, the score and the times).

``Ledger`` holds rows as numpy columns for the report's arithmetic; ``Window`` says which of
them count: decided in ``[since, until)``, and *mature* — decided long enough ago that their
label would have arrived (``maturity``), so that recent decisions, whose chargebacks are still
on their way, do not flatter a model.

Pure: no Kafka here; the wiring (``fraudstream.kafka.history``) feeds decisions and outcomes in.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from fraudstream.core.messages import (
    Decision,
    DecisionKind,
    Outcome,
    OutcomeKind,
    Role,
)
from fraudstream.errors import ConfigError

RowSource = Literal["decisions", "outcomes"]
OutcomeKey = tuple[str, str, str]  # transaction_id, model_version, variant (role)

DECISION_CODES: dict[DecisionKind, int] = {"approve": 0, "review": 1, "decline": 2}
# Without enough fraud labels to measure their delay, decisions count once this old.
FALLBACK_MATURITY_DAYS = 30.0
MIN_LABELS_FOR_MATURITY = 20
MATURITY_QUANTILE = 0.95


@dataclass(frozen=True, slots=True)
class Row:
    """One transaction as one model version saw it: the export's row, the report's unit."""

    transaction_id: str
    card_id: str  # "" when unknown (an outcome written before outcomes carried it)
    model_version: str
    variant: Role  # what this version was for the transaction: champion, challenger or shadow
    decider_version: str | None  # the version whose decision counted (itself unless shadow)
    decision: DecisionKind  # what this version decided (as shadow: would have)
    score: float
    amount: float
    currency: str
    decided_at: str  # RFC 3339; "" when unknown
    is_fraud: bool | None  # the current label; None while unlabelled
    outcome: OutcomeKind | None
    labelled_at: str | None
    source: RowSource


def outcome_key(o: Outcome) -> OutcomeKey:
    return (o.transaction_id, o.model_version, o.variant)


def latest_outcomes(outcomes: Iterable[Outcome]) -> dict[OutcomeKey, Outcome]:
    """The last outcome per transaction, version and role: a reversal replaces the first."""
    latest: dict[OutcomeKey, Outcome] = {}
    for o in outcomes:
        latest[outcome_key(o)] = o
    return latest


def _label(o: Outcome | None) -> tuple[bool | None, OutcomeKind | None, str | None]:
    return (None, None, None) if o is None else (o.is_fraud, o.outcome, o.labelled_at)


def rows_for_decision(d: Decision, outcomes: Mapping[OutcomeKey, Outcome]) -> list[Row]:
    """The deciding model's row and, in shadow mode, the shadow's; labelled where known."""

    def row(version: str, variant: Role, decision: DecisionKind, score: float) -> Row:
        is_fraud, kind, labelled_at = _label(outcomes.get((d.transaction_id, version, variant)))
        return Row(
            d.transaction_id, d.card_id, version, variant, d.model_version, decision,
            float(score), float(d.amount), d.currency, d.decided_at, is_fraud, kind,
            labelled_at, "decisions",
        )  # fmt: skip

    rows = [row(d.model_version, d.variant, d.decision, d.score)]
    sh = d.shadow
    if sh is not None and sh.model_version != d.model_version:
        rows.append(row(sh.model_version, "shadow", sh.decision, sh.score))
    return rows


def join_rows(
    decisions: Iterable[Decision], outcomes: Mapping[OutcomeKey, Outcome]
) -> Iterator[Row]:
    """Every decision's rows (labelled where an outcome exists), then a row for each outcome
    whose decision was not among ``decisions`` (``outcomes``: the latest per key)."""
    matched: set[OutcomeKey] = set()
    for d in decisions:
        for row in rows_for_decision(d, outcomes):
            if row.outcome is not None:
                matched.add((row.transaction_id, row.model_version, row.variant))
            yield row
    for key, o in outcomes.items():
        if key not in matched:
            yield row_for_outcome(o)


def row_for_outcome(o: Outcome) -> Row:
    """A labelled row from an outcome whose decision was not read (expired, or before the seek)."""
    return Row(
        o.transaction_id,
        o.card_id,
        o.model_version,
        o.variant,
        None if o.variant == "shadow" else o.model_version,
        o.decision,
        float(o.score),
        float(o.amount),
        o.currency,
        o.decided_at,
        o.is_fraud,
        o.outcome,
        o.labelled_at,
        "outcomes",
    )


# --------------------------------------------------------------------------------------------
# Time


def parse_ts(text: str | None) -> float | None:
    """RFC 3339 → POSIX seconds; None for "" or None (unknown)."""
    if not text:
        return None
    return datetime.fromisoformat(text).timestamp()


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_when(text: str, now: float) -> float:
    """A point in time for ``--since`` / ``--until``: RFC 3339 or ISO date(-time) (UTC when no
    offset is given), or a duration before ``now`` such as ``90m``, ``36h``, ``7d``, ``2w``."""
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time: give an ISO date or date-time such as 2026-11-29 or "
            "2026-11-29T08:00:00+01:00 (UTC when no offset), or a duration ago such as 36h or 7d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def human_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --------------------------------------------------------------------------------------------
# Columns


Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int32]
Codes = npt.NDArray[np.int8]


class _Codes:
    """Strings to dense integer codes, in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[object, int] = {}
        self.values: list[object] = []

    def code(self, value: object) -> int:
        got = self.index.get(value)
        if got is None:
            got = self.index[value] = len(self.values)
            self.values.append(value)
        return got


@dataclass(frozen=True, slots=True)
class Ledger:
    """Rows as columns. ``group`` codes (model_version, variant); ``card`` codes the card (an
    unknown card is a cluster of its own transaction); ``label`` is 1 fraud, 0 genuine, -1 none."""

    groups: tuple[tuple[str, Role], ...]
    cards: int
    currencies: tuple[str, ...]
    group: Ints
    card: Ints
    tx: Ints
    decision: Codes
    label: Codes
    amount: Floats
    currency: Ints
    decided: Floats  # POSIX seconds; NaN when unknown
    labelled: Floats
    from_decisions: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, rows: Iterable[Row]) -> Ledger:
        groups, cards, txs, currencies = _Codes(), _Codes(), _Codes(), _Codes()
        # Typed arrays, not lists of Python numbers: a week of decisions is millions of rows.
        group, card, tx, currency = array("i"), array("i"), array("i"), array("i")
        decision, label, from_decisions = array("b"), array("b"), array("B")
        amount, decided, labelled = array("d"), array("d"), array("d")
        last_text, last_ts = "", math.nan  # a shadow row repeats its decider's decision time
        for r in rows:
            group.append(groups.code((r.model_version, r.variant)))
            card.append(cards.code(r.card_id or ("?", r.transaction_id)))
            tx.append(txs.code(r.transaction_id))
            decision.append(DECISION_CODES[r.decision])
            label.append(-1 if r.is_fraud is None else int(r.is_fraud))
            amount.append(r.amount)
            currency.append(currencies.code(r.currency))
            if r.decided_at != last_text:
                last_text, ts = r.decided_at, parse_ts(r.decided_at)
                last_ts = math.nan if ts is None else ts
            decided.append(last_ts)
            lab = parse_ts(r.labelled_at)
            labelled.append(math.nan if lab is None else lab)
            from_decisions.append(r.source == "decisions")
        return cls(
            groups=tuple(groups.values),  # type: ignore[arg-type]
            cards=len(cards.values),
            currencies=tuple(str(c) for c in currencies.values),
            group=np.frombuffer(group, dtype=np.int32).copy(),
            card=np.frombuffer(card, dtype=np.int32).copy(),
            tx=np.frombuffer(tx, dtype=np.int32).copy(),
            decision=np.frombuffer(decision, dtype=np.int8).copy(),
            label=np.frombuffer(label, dtype=np.int8).copy(),
            amount=np.frombuffer(amount, dtype=np.float64).copy(),
            currency=np.frombuffer(currency, dtype=np.int32).copy(),
            decided=np.frombuffer(decided, dtype=np.float64).copy(),
            labelled=np.frombuffer(labelled, dtype=np.float64).copy(),
            from_decisions=np.frombuffer(from_decisions, dtype=np.bool_).copy(),
        )

    def __len__(self) -> int:
        return int(self.group.size)


# --------------------------------------------------------------------------------------------
# The window


@dataclass(frozen=True, slots=True)
class Window:
    """Which decisions count: decided in [since, until) and before ``mature_before``."""

    since: float | None
    until: float | None
    maturity_s: float
    maturity_source: str
    mature_before: float
    # fraud.decisions was read completely from here on (None: from its very beginning): rates
    # over all decisions (decline rate, unlabelled-as-genuine) only use decisions after it.
    decisions_from: float | None = None

    @property
    def end(self) -> float:
        return self.mature_before if self.until is None else min(self.until, self.mature_before)

    def mask(self, ledger: Ledger) -> npt.NDArray[np.bool_]:
        """Rows decided inside the window and mature (unknown decision times never count)."""
        t = ledger.decided
        ok = np.isfinite(t) & (t < self.end)
        if self.since is not None:
            ok &= t >= self.since
        return ok

    def decisions_mask(self, ledger: Ledger) -> npt.NDArray[np.bool_]:
        """``mask`` restricted to rows read from fraud.decisions where it is complete."""
        ok = self.mask(ledger) & ledger.from_decisions
        if self.decisions_from is not None:
            ok &= ledger.decided >= self.decisions_from
        return ok

    def to_dict(self) -> dict[str, object]:
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "maturity_days": self.maturity_s / 86400,
            "maturity_source": self.maturity_source,
            "mature_before": iso(self.mature_before),
            "mature_before_ts": self.mature_before,
            "end": iso(self.end),
            "decisions_complete_from": iso(self.decisions_from),
        }


def label_delays(outcomes: Iterable[Outcome]) -> Floats:
    """Seconds from decision to fraud label, once per transaction (the deciding model's outcome;
    those written before outcomes carried their decision time are left out)."""
    delays = []
    for o in outcomes:
        decided, labelled = parse_ts(o.decided_at), parse_ts(o.labelled_at)
        if o.is_fraud and o.variant != "shadow" and decided is not None and labelled is not None:
            delays.append(labelled - decided)
    return np.asarray(delays, dtype=np.float64)


def make_window(
    delays: npt.ArrayLike,
    *,
    now: float,
    since: float | None = None,
    until: float | None = None,
    maturity_days: float | None = None,
    decisions_from: float | None = None,
) -> Window:
    """The window, with the maturity given or measured: the 95th percentile of the observed
    delays from decision to fraud label. Labels still on their way are not observed, so with a
    short history that percentile is low: give ``maturity_days`` when you know better.
    ``delays``: from :func:`label_delays`."""
    if maturity_days is not None:
        if maturity_days < 0:
            raise ConfigError(f"--maturity-days must be 0 or more, got {maturity_days}")
        seconds, source = maturity_days * 86400, "given (--maturity-days)"
    else:
        seen = np.asarray(delays, dtype=np.float64)
        seen = seen[np.isfinite(seen)]
        if seen.size >= MIN_LABELS_FOR_MATURITY:
            seconds = float(np.quantile(np.maximum(seen, 0.0), MATURITY_QUANTILE))
            source = (
                f"observed: {MATURITY_QUANTILE:.0%} of {seen.size} fraud labels arrived "
                f"within {human_duration(seconds)} of the decision"
            )
        else:
            seconds = FALLBACK_MATURITY_DAYS * 86400
            source = (
                f"default {FALLBACK_MATURITY_DAYS:g} days (only {seen.size} fraud labels, "
                f"fewer than {MIN_LABELS_FOR_MATURITY} to measure their delay)"
            )
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until ({iso(until)}) must be after --since ({iso(since)})")
    return Window(since, until, seconds, source, now - seconds, decisions_from)
