"""The one feature definition: the trainer replays history through it and the worker steps it live.

Both paths call :func:`step`, so there is no train/serve skew by construction. A feature row is a
``list[float]`` in the order of :data:`FEATURE_NAMES`; no feature is ever NaN (sentinels instead).

Three groups (feature set ``fs2``):

* stateless features of the transaction itself;
* card features from the card's own past (:class:`CardState`, exact to the event: the worker keeps
  it next to the card's partition);
* entity features — the merchant's traffic and what labels already reported say about the
  merchant and the card — read through ``entities``, a lookup of
  :class:`~fraudstream.core.entity.EntityState` by key, as of
  :func:`~fraudstream.core.entity.cutoff` of the event time (see ``core/entity.py``: the same
  rule offline and live). ``step`` never changes an entity state.

Per-card state is small and bounded because the worker writes it to a Kafka changelog after every
transaction:

* the 1 h features are exact over a capped list of recent (ts, cents) pairs (``RECENT_CAP``; a card
  with more transactions in one hour saturates the 1 h count at the cap);
* the 24 h features are exact to the hour: they sum whole UTC-hour buckets from 23 hours before the
  transaction's hour up to and including its own hour (so they look back 23 to 24 hours);
* the 7 d and 30 d features sum whole UTC-day buckets from 7 (resp. 30) days before the
  transaction's day up to and including its own day (they look back 7 to 8, resp. 30 to 31 days);
* merchants and devices already seen are kept as 24-bit CRC32 hashes in bounded LRU lists;
* amounts are kept as integer cents, so sums are exact and serialise compactly.

All arithmetic that a later feature depends on happens inside :func:`step` (amounts are turned into
cents there, not at serialisation), so a state that round-trips through JSON yields bit-identical
later features. A state stored by the previous feature set (format 1) is upgraded on read without
losing its windows (:meth:`CardState.from_obj`).

The feature set is versioned: changing a feature, its order or its meaning requires a new
:data:`FEATURE_SET_VERSION`, and the registry refuses models trained on another one.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fraudstream.core import entity
from fraudstream.core.entity import Lookup
from fraudstream.core.messages import Transaction
from fraudstream.errors import InvalidMessage

FEATURE_SET_VERSION = "fs2"

STATELESS_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "local_hour",  # 0-23 in the event's own local time (ts + utc_offset_s)
    "local_weekday",  # 0 = Monday … 6 = Sunday, local time
    "channel_pos",
    "channel_ecom",
    "channel_atm",
    "channel_moto",
    "mcc",  # -1 when missing
    "mcc_risk",  # -1 missing, 0 ordinary, 1 elevated, 2 high (see MCC_RISK)
    "has_device",
)

CARD_FEATURES: tuple[str, ...] = (
    "card_count_1h",  # transactions of this card before this one, last hour (exact, capped)
    "card_amount_1h",
    "card_count_24h",  # exact to the hour
    "card_amount_24h",
    "card_count_7d",  # exact to the day
    "card_amount_7d",
    "card_count_30d",  # exact to the day
    "card_amount_30d",
    "amount_to_card_avg",  # amount / card's average amount so far; 1.0 for the first
    "amount_to_avg_24h",  # amount / card's average over the 24 h window; -1 when it is empty
    "amount_to_avg_7d",
    "amount_to_avg_30d",
    "secs_since_prev",  # -1.0 for the first; 0.0 when the event is older than the newest seen
    "card_age_days",  # since the card's first transaction seen (a lower bound after an upgrade)
    "new_merchant",  # 1.0 when the card has not been seen at this merchant (bounded LRU)
    "new_device",  # 1.0 when a device is given and the card has not used it; 0.0 without device
    "card_devices",  # distinct devices the card used (bounded LRU), this one included
    "foreign_country",  # 1.0 when country differs from the card's first seen country
    "small_count_1h",  # transactions < SMALL_AMOUNT in the last hour (card testing)
    "countries_24h",  # distinct countries in the last ~24 h, INCLUDING this transaction
)

ENTITY_FEATURES: tuple[str, ...] = (
    *entity.MERCHANT_FEATURES,
    "amount_to_merchant_avg",  # amount / the merchant's 30 d average amount; -1 when unknown
    *entity.CARD_LABEL_FEATURES,
)

FEATURE_NAMES: tuple[str, ...] = STATELESS_FEATURES + CARD_FEATURES + ENTITY_FEATURES
N_FEATURES = len(FEATURE_NAMES)
CARD_FEATURE_SLICE = slice(len(STATELESS_FEATURES), len(STATELESS_FEATURES) + len(CARD_FEATURES))
ENTITY_FEATURE_SLICE = slice(CARD_FEATURE_SLICE.stop, N_FEATURES)

SMALL_AMOUNT = 5.0
RECENT_CAP = 48
MERCHANT_CAP = 64
DEVICE_CAP = 16
COUNTRY_CAP = 8
_HASH_MASK = 0xFFFFFF  # 24 bits: short in JSON; a false "seen" needs a collision among ≤64 entries
_SMALL_CENTS = round(SMALL_AMOUNT * 100)
_MAX_AMOUNT = 1e12  # larger amounts are not real card payments and would overflow cents maths
_MAX_ABS_TS = 1e11
_STATE_FORMAT = 2

_HOUR = 3600.0
_DAY = 86400.0
_HOURS_24 = 24
_DAYS_7 = 7
_DAYS_30 = 30
_UPGRADE_AGE_S = 8 * _DAY  # a format-1 state with history older than its buckets: at least this

# Risk groups of merchant category codes, following the usual card-scheme "high-risk" lists.
_HIGH_RISK_MCC = (4829, 5816, 5818, 5967, 6051, 6211, 6540, 7801, 7802, 7995)
_ELEVATED_MCC = (4722, 4814, 4816, 5045, 5094, 5732, 5734, 5944, 5945, 5999, 6010, 6011, 7011)
MCC_RISK: dict[int, int] = {**dict.fromkeys(_ELEVATED_MCC, 1), **dict.fromkeys(_HIGH_RISK_MCC, 2)}
_AIRLINE_MCC = range(3000, 3300)  # airline codes: elevated

_CHANNELS: dict[str | None, tuple[float, float, float, float]] = {
    "pos": (1.0, 0.0, 0.0, 0.0),
    "ecom": (0.0, 1.0, 0.0, 0.0),
    "atm": (0.0, 0.0, 1.0, 0.0),
    "moto": (0.0, 0.0, 0.0, 1.0),
}
_NO_CHANNEL = (0.0, 0.0, 0.0, 0.0)


def mcc_risk(mcc: int | None) -> int:
    """-1 when missing, else 0 ordinary, 1 elevated, 2 high risk."""
    if mcc is None:
        return -1
    risk = MCC_RISK.get(mcc)
    if risk is not None:
        return risk
    return 1 if mcc in _AIRLINE_MCC else 0


def short_hash(value: str) -> int:
    """A stable (unlike ``hash``) 24-bit hash of a merchant or device id."""
    return zlib.crc32(value.encode()) & _HASH_MASK


def cents_of(amount: float) -> int:
    """The one conversion of an amount to integer cents (card and entity state alike)."""
    return round(amount * 100.0)


@dataclass(slots=True)
class CardState:
    """Everything the card features need to know about one card's past.

    Lists are kept small by construction (see the module docstring). ``h_h`` and ``d_d`` are
    sorted ascending; the other ``h_*`` / ``d_*`` lists are parallel to them, as are ``r_*`` and
    ``cty*``.
    """

    n: int = 0  # transactions absorbed
    sum_c: int = 0  # their total amount in cents
    last_ts: float = -1.0  # newest event time seen (POSIX seconds); -1.0 = none
    first_ts: float = -1.0  # oldest event time seen (a lower bound after an upgrade); -1.0 = none
    home: str = ""  # first country seen; "" = none yet
    r_ts: list[float] = field(default_factory=list)  # recent (≤ 1 h) event times
    r_c: list[int] = field(default_factory=list)  # their amounts in cents
    h_h: list[int] = field(default_factory=list)  # hour index (ts // 3600) of each hourly bucket
    h_n: list[int] = field(default_factory=list)  # transactions in the bucket
    h_c: list[int] = field(default_factory=list)  # cents in the bucket
    d_d: list[int] = field(default_factory=list)  # day index (ts // 86400) of each daily bucket
    d_n: list[int] = field(default_factory=list)
    d_c: list[int] = field(default_factory=list)
    merch: list[int] = field(default_factory=list)  # LRU of merchant hashes, most recent last
    dev: list[int] = field(default_factory=list)  # LRU of device hashes, most recent last
    cty: list[str] = field(default_factory=list)  # countries seen within ~24 h
    cty_h: list[int] = field(default_factory=list)  # the last hour index each was seen

    def copy(self) -> CardState:
        return CardState(
            self.n,
            self.sum_c,
            self.last_ts,
            self.first_ts,
            self.home,
            self.r_ts.copy(),
            self.r_c.copy(),
            self.h_h.copy(),
            self.h_n.copy(),
            self.h_c.copy(),
            self.d_d.copy(),
            self.d_n.copy(),
            self.d_c.copy(),
            self.merch.copy(),
            self.dev.copy(),
            self.cty.copy(),
            self.cty_h.copy(),
        )

    def to_obj(self) -> list[Any]:
        """Plain JSON-able list (compact: positional, no keys)."""
        return [
            _STATE_FORMAT,
            self.n,
            self.sum_c,
            self.last_ts,
            self.first_ts,
            self.home,
            self.r_ts,
            self.r_c,
            self.h_h,
            self.h_n,
            self.h_c,
            self.d_d,
            self.d_n,
            self.d_c,
            self.merch,
            self.dev,
            self.cty,
            self.cty_h,
        ]

    @classmethod
    def from_obj(cls, obj: Any) -> CardState:
        """Inverse of :meth:`to_obj`, also reading (and upgrading) the format-1 state that
        feature set fs1 stored; raises ``InvalidMessage`` for anything else."""
        if isinstance(obj, list) and len(obj) == 14 and obj[0] == 1:
            return _upgrade_format_1(obj)
        if not isinstance(obj, list) or len(obj) != 18 or obj[0] != _STATE_FORMAT:
            raise InvalidMessage(
                "bad_card_state",
                "card state is not a format-2 list of 18 items (nor a format-1 one); it was "
                "written by another version of fraudstream: clear the card-state table or "
                "replay the changelog",
            )
        try:
            # Written by to_obj (via orjson), so the item types are right: copy, do not convert
            # element by element (this runs for every transaction on the worker's hot path).
            return cls(
                int(obj[1]),
                int(obj[2]),
                float(obj[3]),
                float(obj[4]),
                str(obj[5]),
                list(obj[6]),
                list(obj[7]),
                list(obj[8]),
                list(obj[9]),
                list(obj[10]),
                list(obj[11]),
                list(obj[12]),
                list(obj[13]),
                list(obj[14]),
                list(obj[15]),
                list(obj[16]),
                list(obj[17]),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(
                "bad_card_state", f"card state has a malformed item: {exc}"
            ) from exc


def _upgrade_format_1(obj: list[Any]) -> CardState:
    """fs1's state (hourly buckets over 7 days) → format 2: the hours of the last day stay hourly,
    every hour is also summed into its day, so the 24 h and 7 d windows lose nothing and the 30 d
    window starts from the 7 days that were kept. fs1 did not store the first event's time: the
    card's age is the oldest bucket when every transaction is in the buckets, else at least
    ``_UPGRADE_AGE_S`` (a lower bound)."""
    try:
        n, sum_c, last_ts, home = int(obj[1]), int(obj[2]), float(obj[3]), str(obj[4])
        b_h, b_n, b_c = [int(x) for x in obj[7]], [int(x) for x in obj[8]], [int(x) for x in obj[9]]
        state = CardState(
            n=n,
            sum_c=sum_c,
            last_ts=last_ts,
            home=home,
            r_ts=[float(x) for x in obj[5]],
            r_c=[int(x) for x in obj[6]],
            merch=[int(x) for x in obj[10]],
            dev=[int(x) for x in obj[11]],
            cty=[str(x) for x in obj[12]],
            cty_h=[int(x) for x in obj[13]],
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise InvalidMessage(
            "bad_card_state", f"format-1 card state has a malformed item: {exc}"
        ) from exc
    newest_hour = int(last_ts // _HOUR)
    days: dict[int, list[int]] = {}
    for h, cnt, c in zip(b_h, b_n, b_c, strict=True):
        if h > newest_hour - _HOURS_24:
            state.h_h.append(h)
            state.h_n.append(cnt)
            state.h_c.append(c)
        day = days.setdefault(h // 24, [0, 0])
        day[0] += cnt
        day[1] += c
    for d in sorted(days):
        state.d_d.append(d)
        state.d_n.append(days[d][0])
        state.d_c.append(days[d][1])
    if n:
        all_in_buckets = bool(b_h) and sum(b_n) >= n
        state.first_ts = b_h[0] * _HOUR if all_in_buckets else last_ts - _UPGRADE_AGE_S
    return state


def state_to_json(state: CardState) -> bytes:
    return orjson.dumps(state.to_obj())


def state_from_json(raw: bytes) -> CardState:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("bad_card_state", f"card state is not JSON: {exc}") from exc
    return CardState.from_obj(obj)


def valid_amount(amount: float) -> bool:
    """A finite, sane amount (NaN fails too): what the features, and entity state, accept."""
    return 0.0 <= amount <= _MAX_AMOUNT


def _valid(amount: float, ts: float) -> bool:
    # Written as ranges so that NaN fails too.
    return 0.0 <= amount <= _MAX_AMOUNT and -_MAX_ABS_TS <= ts <= _MAX_ABS_TS


def _invalid_row(amount: float, ts: float) -> list[float]:
    """The row of a transaction whose amount or time is unusable: NaN exactly where the problem
    is, so that ``scoring.nonfinite_rows`` dead-letters it and names the culprit."""
    row = [0.0] * N_FEATURES
    if not 0.0 <= amount <= _MAX_AMOUNT:
        row[0] = row[1] = math.nan
    if not -_MAX_ABS_TS <= ts <= _MAX_ABS_TS:
        row[2] = row[3] = math.nan
    return row


def stateless_features(tx: Transaction) -> list[float]:
    """The :data:`STATELESS_FEATURES` of one transaction."""
    amount, ts = float(tx.amount), float(tx.ts)
    if not _valid(amount, ts):
        return _invalid_row(amount, ts)[: len(STATELESS_FEATURES)]
    return _stateless(tx, amount, ts)


def _stateless(tx: Transaction, amount: float, ts: float) -> list[float]:
    day, sec = divmod(ts + tx.utc_offset_s, 86400.0)
    mcc = tx.mcc
    pos, ecom, atm, moto = _CHANNELS.get(tx.channel, _NO_CHANNEL)
    return [
        amount,
        math.log1p(amount),
        float(int(sec // _HOUR)),
        float((int(day) + 3) % 7),  # 1970-01-01 was a Thursday
        pos,
        ecom,
        atm,
        moto,
        -1.0 if mcc is None else float(mcc),
        float(mcc_risk(mcc)),
        0.0 if tx.device_id is None else 1.0,
    ]


def _ratio(cents: int, count: int, total: int) -> float:
    """amount / the window's average amount (floored at 1 cent); -1 for an empty window."""
    return -1.0 if count == 0 else cents * count / max(total, count)


def _add(keys: list[int], ns: list[int], cs: list[int], key: int, cents: int) -> None:
    """Add one transaction to the sorted bucket lists."""
    if keys and keys[-1] == key:
        ns[-1] += 1
        cs[-1] += cents
        return
    i = bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        ns[i] += 1
        cs[i] += cents
    else:
        keys.insert(i, key)
        ns.insert(i, 1)
        cs.insert(i, cents)


def _entity_features(tx: Transaction, amount: float, ts: float, entities: Lookup) -> list[float]:
    cut = entity.cutoff(ts)
    m = entity.merchant_features(entities(entity.merchant_key(tx.merchant_id)), cut)
    avg = m[3]
    return [
        *m,
        amount / avg if avg > 0.0 else -1.0,
        *entity.card_label_features(entities(entity.card_key(tx.card_id)), cut),
    ]


def step(
    state: CardState | None, tx: Transaction, entities: Lookup
) -> tuple[CardState, list[float]]:
    """Features of ``tx`` from the card's state before it and what ``entities`` knew at the
    cutoff, then the card state absorbs ``tx``.

    ``state`` itself is never modified: the returned state is a new object, so a caller can
    roll back by keeping the old one. Entity states are only read. When the amount or the event
    time is not a finite, sane number (NaN, infinite, negative, above 1e12), ``state`` is returned
    as is and the row has NaN in the offending features (nowhere else), for the caller to
    dead-letter it.
    """
    amount, ts = float(tx.amount), float(tx.ts)
    if not _valid(amount, ts):
        return (CardState() if state is None else state), _invalid_row(amount, ts)
    row = _stateless(tx, amount, ts)
    state = CardState() if state is None else state.copy()
    cents = cents_of(amount)
    hour = int(ts // _HOUR)
    day = int(ts // _DAY)

    # --- features, from the state before tx ---------------------------------------------------
    lo = ts - _HOUR
    c1 = s1 = small = 0
    for t, c in zip(state.r_ts, state.r_c, strict=True):
        if lo < t <= ts:
            c1 += 1
            s1 += c
            if c < _SMALL_CENTS:
                small += 1
    # Buckets are sorted: the windows are slices, summed in C.
    h_h = state.h_h
    lo24 = bisect_left(h_h, hour - _HOURS_24 + 1)
    hi = len(h_h) if not h_h or h_h[-1] <= hour else bisect_left(h_h, hour + 1, lo24)
    c24 = sum(state.h_n[lo24:hi])
    s24 = sum(state.h_c[lo24:hi])
    d_d = state.d_d
    lo30 = bisect_left(d_d, day - _DAYS_30)
    lo7 = bisect_left(d_d, day - _DAYS_7, lo30)
    hi = len(d_d) if not d_d or d_d[-1] <= day else bisect_left(d_d, day + 1, lo7)
    c7 = sum(state.d_n[lo7:hi])
    s7 = sum(state.d_c[lo7:hi])
    c30 = c7 + sum(state.d_n[lo30:lo7])
    s30 = s7 + sum(state.d_c[lo30:lo7])
    n = state.n
    ratio = 1.0 if n == 0 else cents * n / max(state.sum_c, n)  # average floored at 1 cent
    last = state.last_ts
    since = -1.0 if n == 0 else max(ts - last, 0.0)
    age = 0.0 if n == 0 else max(ts - state.first_ts, 0.0) / _DAY

    mh = short_hash(tx.merchant_id)
    merch = state.merch
    if mh in merch:
        new_merchant = 0.0
        if merch[-1] != mh:
            merch.remove(mh)
            merch.append(mh)
    else:
        new_merchant = 1.0
        merch.append(mh)
        if len(merch) > MERCHANT_CAP:
            del merch[0]

    new_device = 0.0
    dev = state.dev
    if tx.device_id is not None:
        dh = short_hash(tx.device_id)
        if dh in dev:
            if dev[-1] != dh:
                dev.remove(dh)
                dev.append(dh)
        else:
            new_device = 1.0
            dev.append(dh)
            if len(dev) > DEVICE_CAP:
                del dev[0]

    country = tx.country
    foreign = 1.0 if country and state.home and country != state.home else 0.0
    distinct = 0
    seen_here = False
    for cc, h in zip(state.cty, state.cty_h, strict=True):
        if hour - h < _HOURS_24:
            distinct += 1
            if cc == country:
                seen_here = True
    if country and not seen_here:
        distinct += 1

    row += (
        float(c1),
        s1 / 100.0,
        float(c24),
        s24 / 100.0,
        float(c7),
        s7 / 100.0,
        float(c30),
        s30 / 100.0,
        ratio,
        _ratio(cents, c24, s24),
        _ratio(cents, c7, s7),
        _ratio(cents, c30, s30),
        since,
        age,
        new_merchant,
        new_device,
        float(len(dev)),
        foreign,
        float(small),
        float(distinct),
    )
    row += _entity_features(tx, amount, ts, entities)

    # --- absorb tx ----------------------------------------------------------------------------
    state.n = n + 1
    state.sum_c += cents
    if n == 0 or ts < state.first_ts:
        state.first_ts = ts
    if ts > last:
        last = ts
        state.last_ts = ts
    newest_hour = int(last // _HOUR)
    newest_day = int(last // _DAY)

    r_ts, r_c = state.r_ts, state.r_c
    r_ts.append(ts)
    r_c.append(cents)
    horizon = last - _HOUR
    if r_ts[0] <= horizon or len(r_ts) > RECENT_CAP:
        keep = [i for i, t in enumerate(r_ts) if t > horizon][-RECENT_CAP:]
        state.r_ts = [r_ts[i] for i in keep]
        state.r_c = [r_c[i] for i in keep]

    _add(h_h, state.h_n, state.h_c, hour, cents)
    old = newest_hour - _HOURS_24
    if h_h[0] <= old:
        j = bisect_left(h_h, old + 1)
        del h_h[:j], state.h_n[:j], state.h_c[:j]
    _add(d_d, state.d_n, state.d_c, day, cents)
    old = newest_day - _DAYS_30 - 1
    if d_d[0] <= old:
        j = bisect_left(d_d, old + 1)
        del d_d[:j], state.d_n[:j], state.d_c[:j]

    if country:
        if not state.home:
            state.home = country
        cty, cty_h = state.cty, state.cty_h
        try:
            k = cty.index(country)
            cty_h[k] = max(cty_h[k], hour)
        except ValueError:
            cty.append(country)
            cty_h.append(hour)
        if len(cty) > COUNTRY_CAP or min(cty_h) <= newest_hour - _HOURS_24:
            pairs = [(h, cc) for cc, h in zip(cty, cty_h, strict=True) if newest_hour - h < 24]
            if len(pairs) > COUNTRY_CAP:
                pairs = sorted(pairs)[-COUNTRY_CAP:]
            state.cty = [cc for _, cc in pairs]
            state.cty_h = [h for h, _ in pairs]
    return state, row


def step_many(
    states: MutableMapping[str, CardState], txs: Iterable[Transaction], entities: Lookup
) -> np.ndarray:
    """Steps ``txs`` in the given order through ``states`` (card_id → state, updated) with the
    entity states ``entities`` answers; returns a float64 matrix, one row per tx."""
    rows: list[list[float]] = []
    for tx in txs:
        st, row = step(states.get(tx.card_id), tx, entities)
        states[tx.card_id] = st
        rows.append(row)
    return _matrix(rows)


def _matrix(rows: list[list[float]]) -> np.ndarray:
    if not rows:
        return np.zeros((0, N_FEATURES), dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)


def row_as_dict(row: list[float] | np.ndarray) -> Mapping[str, float]:
    """A feature row keyed by name (for reasons, logs and debugging)."""
    return {name: float(v) for name, v in zip(FEATURE_NAMES, row, strict=True)}
