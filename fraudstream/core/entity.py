"""Entity state beyond the card: what a merchant (or a card's labels) looked like at a cutoff.

The point-in-time rule (one definition, offline and live; see docs/entity-state.md):
``cutoff(t) = floor((t - SLACK_S) / BUCKET_S) * BUCKET_S``. The entity features of a transaction
at ``t`` are a pure function of the entity's transactions with event time ``< cutoff(t)`` and of
the labels with ``reported_at < cutoff(t)``; for a transaction labelled more than once (a
reversal), the label in force is the one with the latest ``reported_at`` below the cutoff (ties:
fraud wins). Nothing at or after the cutoff counts, whatever the state holds, so a state that is
*ahead* of the cutoff gives the same features as one exactly at it — within the retention
margins: a query up to a day behind the state's newest event is exact.

:class:`EntityState` absorbs events commutatively (sums per bucket, labels kept per transaction
and resolved by ``reported_at``), so the same set of events gives the same state in any order:
the worker's aggregator (any order across partitions) and the offline replay (event-time order)
agree. Label absorption is idempotent (the same label twice changes nothing); transaction
absorption is not (the topology delivers each transaction exactly once).

Bounded: hourly buckets of at least ``HOURLY_KEEP_H`` hours and daily buckets of ``DAILY_KEEP_D``
days before the newest event seen's day, labels of transactions at most ``LABEL_KEEP_D`` days
before that day, at most ``LABEL_CAP`` labelled transactions (the newest by transaction time) and
``REPORTS_CAP`` reports per transaction. The horizons move by whole days (pruning is then rare).
Because every retention rule keeps "the newest N by a fixed key" or "everything after a horizon
that only moves forward", the final state is still a function of the set of events absorbed,
whatever their order.

Genuine labels are kept too (a reversal fraud → genuine must be able to cancel a fraud), but the
features only count frauds, so they walk a derived index of the transactions that have a fraud
report, not every label.

Nothing here imports Kafka or Faust: the worker's aggregator and the offline replay both use it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from fraudstream.errors import InvalidMessage

EntityKey = str  # "m:<merchant_id>" | "c:<card_id>"
Lookup = Callable[[EntityKey], "EntityState | None"]

BUCKET_S = 3600
SLACK_S = 300
DAY_S = 86400
HOURLY_KEEP_H = 48
DAILY_KEEP_D = 32
LABEL_KEEP_D = 32
LABEL_CAP = 512
REPORTS_CAP = 8
_FORMAT = 1
_MAX_ABS_TS = 1e11

MERCHANT_FEATURES: tuple[str, ...] = (
    "m_count_1d",  # the merchant's transactions in the 24 hourly buckets before the cutoff
    "m_count_7d",  # 7 whole UTC days before the cutoff's day + its hours before the cutoff
    "m_count_30d",  # 30 whole UTC days before the cutoff's day + its hours before the cutoff
    "m_avg_amount_30d",  # their average amount; -1 when none
    "m_frauds_7d",  # known frauds among its transactions of [cutoff - 7 d, cutoff)
    "m_frauds_30d",  # known frauds among its transactions of [cutoff - 30 d, cutoff)
    "m_fraud_rate_30d",  # m_frauds_30d / m_count_30d; 0 without transactions
    "m_reported_1d",  # those known frauds whose label was reported in [cutoff - 1 d, cutoff)
    "m_reported_7d",  # ... in [cutoff - 7 d, cutoff)
    "m_days_since_fraud",  # cutoff - newest known fraud's transaction time, days; -1 none
    "m_fraud_span_days",  # newest - oldest known fraud's transaction time (30 d), days; -1 none
    "m_genuine_after_fraud",  # transactions known genuine after the newest known fraud; -1 none
    "m_fraud_share_since_first",  # known frauds / labelled transactions since the oldest; -1 none
)
CARD_LABEL_FEATURES: tuple[str, ...] = (
    "c_frauds_30d",  # known frauds among the card's transactions of [cutoff - 30 d, cutoff)
    "c_reported_7d",  # frauds of the card reported in [cutoff - 7 d, cutoff)
    "c_days_since_fraud",  # cutoff - newest known fraud's transaction time, days; -1 none
)

_NO_MERCHANT: tuple[float, ...] = (
    *(0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    *(-1.0, -1.0, -1.0, -1.0),
)
_NO_CARD: tuple[float, ...] = (0.0, 0.0, -1.0)


def cutoff(ts: float) -> float:
    """The newest instant whose events the entity features of a transaction at ``ts`` see."""
    return math.floor((ts - SLACK_S) / BUCKET_S) * float(BUCKET_S)


def merchant_key(merchant_id: str) -> EntityKey:
    return "m:" + merchant_id


def card_key(card_id: str) -> EntityKey:
    return "c:" + card_id


def nothing_known(_key: EntityKey) -> EntityState | None:
    """The lookup of a worker without entity state: every entity is unknown."""
    return None


def _check_ts(ts: float, what: str) -> None:
    if not -_MAX_ABS_TS <= ts <= _MAX_ABS_TS:  # NaN fails too
        raise ValueError(f"{what} {ts!r} is not a usable POSIX time")


@dataclass(slots=True)
class Label:
    """The labels one transaction received: ``reports`` sorted by (reported_at, is_fraud)."""

    tx_ts: float
    cents: int
    reports: list[tuple[float, bool]]

    def in_force(self, cut: float) -> tuple[float, bool] | None:
        """The (reported_at, is_fraud) in force at ``cut``: the latest reported before it."""
        reports = self.reports
        if reports[-1][0] < cut:  # the common case: one report, long known
            return reports[-1]
        for r in reversed(reports):
            if r[0] < cut:
                return r
        return None


@dataclass(slots=True)
class EntityState:
    """Transactions in hourly and daily buckets and labels per transaction of one entity."""

    newest: float | None = None  # newest transaction time seen (absorbed or labelled)
    hourly: dict[int, list[int]] = field(default_factory=dict)  # hour index -> [count, cents]
    daily: dict[int, list[int]] = field(default_factory=dict)  # day index -> [count, cents]
    labels: dict[str, Label] = field(default_factory=dict)  # transaction_id -> its labels
    # Derived, not state: the ids in ``labels`` with a fraud report (rebuilt by from_bytes).
    _frauds: set[str] = field(default_factory=set, compare=False, repr=False)
    _label_floor: float | None = field(default=None, compare=False, repr=False)  # oldest tx_ts
    # Features of the last cutoff asked for (not state: cleared by every absorb, not serialised).
    _memo: tuple[int, float, tuple[float, ...]] | None = field(
        default=None, compare=False, repr=False
    )

    # --- absorbing ------------------------------------------------------------------------------
    def _advance(self, ts: float) -> int:
        """Move the newest time on; returns the newest day (the horizons are relative to it)."""
        old = self.newest
        if old is not None and ts <= old:
            return int(old // DAY_S)
        self.newest = ts
        day = int(ts // DAY_S)
        if old is None or day != int(old // DAY_S):
            self._prune(day)
        return day

    def _prune(self, day: int) -> None:
        self._memo = None
        h0, d0 = _horizons(day)
        if self.hourly and min(self.hourly) < h0:
            self.hourly = {h: v for h, v in self.hourly.items() if h >= h0}
        if self.daily and min(self.daily) < d0:
            self.daily = {d: v for d, v in self.daily.items() if d >= d0}
        t0 = (day - LABEL_KEEP_D) * float(DAY_S)
        if self.labels and self._oldest_label() < t0:
            old = [k for k, v in self.labels.items() if v.tx_ts < t0]
            for k in old:
                del self.labels[k]
                self._frauds.discard(k)
            self._label_floor = None

    def _oldest_label(self) -> float:
        floor = self._label_floor
        if floor is None:
            floor = self._label_floor = min(v.tx_ts for v in self.labels.values())
        return floor

    def absorb_tx(self, ts: float, cents: int) -> None:
        """Count one transaction of this entity (not idempotent: deliver each exactly once)."""
        _check_ts(ts, "transaction time")
        memo = self._memo
        if memo is not None and ts < memo[1]:  # features at or before ts are unchanged
            self._memo = None
        h0, d0 = _horizons(self._advance(ts))
        h, d = int(ts // BUCKET_S), int(ts // DAY_S)
        if h >= h0:
            b = self.hourly.get(h)
            if b is None:
                self.hourly[h] = [1, cents]
            else:
                b[0] += 1
                b[1] += cents
        if d >= d0:
            b = self.daily.get(d)
            if b is None:
                self.daily[d] = [1, cents]
            else:
                b[0] += 1
                b[1] += cents

    def absorb_label(
        self, tx_id: str, tx_ts: float, cents: int, reported_at: float, is_fraud: bool
    ) -> None:
        """Record that transaction ``tx_id`` (at ``tx_ts``, ``cents``) was labelled at
        ``reported_at``. Idempotent; a later report for the same transaction (a reversal) does
        not erase the earlier one: which one is in force depends on the cutoff asked for."""
        _check_ts(tx_ts, "labelled transaction time")
        _check_ts(reported_at, "reported_at")
        memo = self._memo
        if memo is not None and reported_at < memo[1]:
            self._memo = None
        day = self._advance(tx_ts)
        if tx_ts < (day - LABEL_KEEP_D) * float(DAY_S):
            return
        report = (float(reported_at), bool(is_fraud))
        lab = self.labels.get(tx_id)
        if is_fraud:
            self._frauds.add(tx_id)
        if lab is None:
            self.labels[tx_id] = Label(float(tx_ts), int(cents), [report])
            floor = self._label_floor
            if floor is not None and tx_ts < floor:
                self._label_floor = float(tx_ts)
            if len(self.labels) > LABEL_CAP:
                self._cap_labels()
            return
        # The same transaction always carries the same time and amount; should two label events
        # disagree, keep the larger pair so that the result does not depend on their order.
        if (tx_ts, cents) > (lab.tx_ts, lab.cents):
            lab.tx_ts, lab.cents = float(tx_ts), int(cents)
            self._label_floor = None
        if report not in lab.reports:
            lab.reports.append(report)
            lab.reports.sort()
            if len(lab.reports) > REPORTS_CAP:
                del lab.reports[:-REPORTS_CAP]

    def _cap_labels(self) -> None:
        self._memo = None
        keep = sorted(self.labels.items(), key=lambda kv: (kv[1].tx_ts, kv[0]))[-LABEL_CAP:]
        self.labels = dict(keep)
        self._frauds.intersection_update(self.labels)
        self._label_floor = None

    # --- windows --------------------------------------------------------------------------------
    def counts(self, cut: float) -> tuple[int, int, int, int, int]:
        """(count 1 d, count 7 d, count 30 d, cents 30 d, count of the cutoff's day so far)."""
        ch = int(cut // BUCKET_S)
        cd = int(cut // DAY_S)
        day_h0 = cd * 24
        c1 = today = today_c = 0
        hourly = self.hourly
        if len(hourly) > 24:
            # A busy entity keeps ~72 hourly buckets: ask for the 24 that count (the cutoff's
            # day so far is among them: ch - day_h0 < 24) instead of walking them all.
            get = hourly.get
            for h in range(ch - 24, ch):
                b = get(h)
                if b is not None:
                    c1 += b[0]
                    if h >= day_h0:
                        today += b[0]
                        today_c += b[1]
        else:
            for h, (n, c) in hourly.items():
                if ch - 24 <= h < ch:
                    c1 += n
                    if h >= day_h0:
                        today += n
                        today_c += c
        c7 = c30 = today
        s30 = today_c
        for d, (n, c) in self.daily.items():
            if cd - 30 <= d < cd:
                c30 += n
                s30 += c
                if d >= cd - 7:
                    c7 += n
        return c1, c7, c30, s30, today

    def label_summary(self, cut: float) -> tuple[int, int, int, int, float, float]:
        """Frauds in force at ``cut`` among transactions of [cut - 30 d, cut):
        (frauds 7 d, frauds 30 d, frauds reported 1 d, reported 7 d, newest fraud's tx time,
        oldest fraud's tx time) — times are NaN without frauds."""
        lo30, lo7, lo1 = cut - 30 * DAY_S, cut - 7 * DAY_S, cut - DAY_S
        f7 = f30 = r1 = r7 = 0
        newest = oldest = math.nan
        labels = self.labels
        for tx_id in self._frauds:
            lab = labels[tx_id]
            ts = lab.tx_ts
            if not lo30 <= ts < cut:
                continue
            rep = lab.in_force(cut)
            if rep is None or not rep[1]:
                continue
            f30 += 1
            if ts >= lo7:
                f7 += 1
            r = rep[0]
            if r >= lo7:
                r7 += 1
                if r >= lo1:
                    r1 += 1
            if not ts <= newest:  # also true while newest is NaN
                newest = ts
            if not ts >= oldest:
                oldest = ts
        return f7, f30, r1, r7, newest, oldest

    def genuine_since(self, cut: float, oldest: float, newest: float) -> tuple[int, int]:
        """Transactions whose label in force at ``cut`` is genuine: (those of (newest, cut) —
        has the merchant been seen clean since its last known fraud? — and those of
        [oldest, cut) — how much of its traffic since the first known fraud was clean). Walks
        every label: only asked when a fraud is known."""
        after = since = 0
        for lab in self.labels.values():
            ts = lab.tx_ts
            if oldest <= ts < cut:
                rep = lab.in_force(cut)
                if rep is not None and not rep[1]:
                    since += 1
                    if ts > newest:
                        after += 1
        return after, since

    # --- serialisation --------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact binary form (format 1): integers little-endian, times as float64."""
        parts = [_HEAD.pack(_FORMAT, math.nan if self.newest is None else self.newest)]
        for table in (self.hourly, self.daily):
            parts.append(_U32.pack(len(table)))
            parts.extend(_BUCKET.pack(k, n, c) for k, (n, c) in sorted(table.items()))
        parts.append(_U32.pack(len(self.labels)))
        for tx_id, lab in sorted(self.labels.items()):
            raw = tx_id.encode()
            parts.append(_LABEL.pack(len(raw), lab.tx_ts, lab.cents, len(lab.reports)))
            parts.append(raw)
            parts.extend(_REPORT.pack(r, v) for r, v in lab.reports)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> EntityState:
        """Inverse of :meth:`to_bytes`; raises ``InvalidMessage`` for anything else."""
        try:
            fmt, newest = _HEAD.unpack_from(raw, 0)
            if fmt != _FORMAT:
                raise ValueError(f"format {fmt}, expected {_FORMAT}")
            pos = _HEAD.size
            tables: list[dict[int, list[int]]] = []
            for _ in range(2):
                (n,) = _U32.unpack_from(raw, pos)
                pos += 4
                table: dict[int, list[int]] = {}
                for k, cnt, c in _BUCKET.iter_unpack(raw[pos : pos + n * _BUCKET.size]):
                    table[k] = [cnt, c]
                if len(table) != n:
                    raise ValueError("bucket table cut short")
                pos += n * _BUCKET.size
                tables.append(table)
            (n,) = _U32.unpack_from(raw, pos)
            pos += 4
            labels: dict[str, Label] = {}
            for _ in range(n):
                size, tx_ts, cents, k = _LABEL.unpack_from(raw, pos)
                pos += _LABEL.size
                tx_id = raw[pos : pos + size].decode()
                pos += size
                reports = [
                    (r, bool(v)) for r, v in _REPORT.iter_unpack(raw[pos : pos + k * _REPORT.size])
                ]
                if not reports or len(reports) != k:
                    raise ValueError("label reports cut short")
                pos += k * _REPORT.size
                labels[tx_id] = Label(tx_ts, cents, reports)
            if pos != len(raw):
                raise ValueError(f"{len(raw) - pos} trailing bytes")
            frauds = {k for k, lab in labels.items() if any(v for _, v in lab.reports)}
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise InvalidMessage(
                "bad_entity_state",
                f"entity state is not a format-{_FORMAT} record ({exc}); it was written by "
                "another version of fraudstream or damaged: rebuild the entity-state topic",
            ) from exc
        return cls(None if math.isnan(newest) else newest, tables[0], tables[1], labels, frauds)


def _horizons(day: int) -> tuple[int, int]:
    """The oldest hour and day index kept when the newest event is on ``day``."""
    return (day * 24) - HOURLY_KEEP_H, day - DAILY_KEEP_D


_HEAD = struct.Struct("<Bd")
_U32 = struct.Struct("<I")
_BUCKET = struct.Struct("<iIq")  # index, count, cents
_LABEL = struct.Struct("<HdqB")  # id length, tx time, cents, number of reports
_REPORT = struct.Struct("<d?")


# --- features -------------------------------------------------------------------------------------


def merchant_features(state: EntityState | None, cut: float) -> tuple[float, ...]:
    """The :data:`MERCHANT_FEATURES` of a merchant as of ``cut`` (sentinels when unknown)."""
    if state is None:
        return _NO_MERCHANT
    memo = state._memo
    if memo is not None and memo[0] == 0 and memo[1] == cut:
        return memo[2]
    c1, c7, c30, s30, _ = state.counts(cut)
    f7, f30, r1, r7, newest, oldest = state.label_summary(cut)
    after, since = state.genuine_since(cut, oldest, newest) if f30 else (-1, -1)
    out = (
        float(c1),
        float(c7),
        float(c30),
        s30 / 100.0 / c30 if c30 else -1.0,
        float(f7),
        float(f30),
        f30 / c30 if c30 else 0.0,
        float(r1),
        float(r7),
        -1.0 if f30 == 0 else (cut - newest) / DAY_S,
        -1.0 if f30 == 0 else (newest - oldest) / DAY_S,
        float(after),
        -1.0 if f30 == 0 else f30 / (f30 + since),
    )
    state._memo = (0, cut, out)
    return out


def card_label_features(state: EntityState | None, cut: float) -> tuple[float, ...]:
    """The :data:`CARD_LABEL_FEATURES` of a card as of ``cut`` (sentinels when unknown)."""
    if state is None:
        return _NO_CARD
    memo = state._memo
    if memo is not None and memo[0] == 1 and memo[1] == cut:
        return memo[2]
    _, f30, _, r7, newest, _ = state.label_summary(cut)
    out = (float(f30), float(r7), -1.0 if f30 == 0 else (cut - newest) / DAY_S)
    state._memo = (1, cut, out)
    return out
