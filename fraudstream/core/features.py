"""The one feature definition: the trainer replays history through it and the worker steps it live.

Both paths call :func:`step`, so there is no train/serve skew by construction. A feature row is a
``list[float]`` in the order of :data:`FEATURE_NAMES`; no feature is ever NaN (sentinels instead).

Per-card state (:class:`CardState`) is small and bounded because the worker writes it to a Kafka
changelog after every transaction:

* the 1 h features are exact over a capped list of recent (ts, cents) pairs (``RECENT_CAP``; a card
  with more transactions in one hour saturates the 1 h count at the cap);
* the 24 h and 7 d features are exact to the hour: they sum whole UTC-hour buckets, from the hour
  23 (resp. 167) hours before the transaction's hour up to and including its own hour, so they
  look back between 23 and 24 hours (resp. 167 and 168);
* merchants and devices already seen are kept as 24-bit CRC32 hashes in bounded LRU lists;
* amounts are kept as integer cents, so sums are exact and serialise compactly.

All arithmetic that a later feature depends on happens inside :func:`step` (amounts are turned into
cents there, not at serialisation), so a state that round-trips through JSON yields bit-identical
later features.

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

from fraudstream.core.messages import Transaction
from fraudstream.errors import InvalidMessage

FEATURE_SET_VERSION = "fs1"

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
    "card_count_7d",  # exact to the hour
    "card_amount_7d",
    "amount_to_card_avg",  # amount / card's average amount so far; 1.0 for the first
    "secs_since_prev",  # -1.0 for the first; 0.0 when the event is older than the newest seen
    "new_merchant",  # 1.0 when the card has not been seen at this merchant (bounded LRU)
    "new_device",  # 1.0 when a device is given and the card has not used it; 0.0 without device
    "foreign_country",  # 1.0 when country differs from the card's first seen country
    "small_count_1h",  # transactions < SMALL_AMOUNT in the last hour (card testing)
    "countries_24h",  # distinct countries in the last ~24 h, INCLUDING this transaction
)

FEATURE_NAMES: tuple[str, ...] = STATELESS_FEATURES + CARD_FEATURES
N_FEATURES = len(FEATURE_NAMES)
CARD_FEATURE_SLICE = slice(len(STATELESS_FEATURES), N_FEATURES)

SMALL_AMOUNT = 5.0
RECENT_CAP = 48
MERCHANT_CAP = 64
DEVICE_CAP = 16
COUNTRY_CAP = 8
_HASH_MASK = 0xFFFFFF  # 24 bits: short in JSON; a false "seen" needs a collision among ≤64 entries
_SMALL_CENTS = round(SMALL_AMOUNT * 100)
_MAX_AMOUNT = 1e12  # larger amounts are not real card payments and would overflow cents maths
_MAX_ABS_TS = 1e11
_STATE_FORMAT = 1

_HOUR = 3600.0
_HOURS_24 = 24
_HOURS_7D = 168

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


@dataclass(slots=True)
class CardState:
    """Everything the card features need to know about one card's past.

    Lists are kept small by construction (see the module docstring). ``b_h`` is sorted ascending;
    the other ``b_*`` lists are parallel to it, as are ``r_*`` and ``cty*``.
    """

    n: int = 0  # transactions absorbed
    sum_c: int = 0  # their total amount in cents
    last_ts: float = -1.0  # newest event time seen (POSIX seconds); -1.0 = none
    home: str = ""  # first country seen; "" = none yet
    r_ts: list[float] = field(default_factory=list)  # recent (≤ 1 h) event times
    r_c: list[int] = field(default_factory=list)  # their amounts in cents
    b_h: list[int] = field(default_factory=list)  # hour index (ts // 3600) of each bucket
    b_n: list[int] = field(default_factory=list)  # transactions in the bucket
    b_c: list[int] = field(default_factory=list)  # cents in the bucket
    merch: list[int] = field(default_factory=list)  # LRU of merchant hashes, most recent last
    dev: list[int] = field(default_factory=list)  # LRU of device hashes, most recent last
    cty: list[str] = field(default_factory=list)  # countries seen within ~24 h
    cty_h: list[int] = field(default_factory=list)  # the last hour index each was seen

    def copy(self) -> CardState:
        return CardState(
            self.n,
            self.sum_c,
            self.last_ts,
            self.home,
            self.r_ts.copy(),
            self.r_c.copy(),
            self.b_h.copy(),
            self.b_n.copy(),
            self.b_c.copy(),
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
            self.home,
            self.r_ts,
            self.r_c,
            self.b_h,
            self.b_n,
            self.b_c,
            self.merch,
            self.dev,
            self.cty,
            self.cty_h,
        ]

    @classmethod
    def from_obj(cls, obj: Any) -> CardState:
        """Inverse of :meth:`to_obj`; raises ``InvalidMessage`` for anything else."""
        if not isinstance(obj, list) or len(obj) != 14 or obj[0] != _STATE_FORMAT:
            raise InvalidMessage(
                "bad_card_state",
                "card state is not a format-1 list of 14 items; it was written by another "
                "version of fraudstream: clear the card-state table or replay the changelog",
            )
        try:
            # Written by to_obj (via orjson), so the item types are right: copy, do not convert
            # element by element (this runs for every transaction on the worker's hot path).
            return cls(
                int(obj[1]),
                int(obj[2]),
                float(obj[3]),
                str(obj[4]),
                list(obj[5]),
                list(obj[6]),
                list(obj[7]),
                list(obj[8]),
                list(obj[9]),
                list(obj[10]),
                list(obj[11]),
                list(obj[12]),
                list(obj[13]),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(
                "bad_card_state", f"card state has a malformed item: {exc}"
            ) from exc


def state_to_json(state: CardState) -> bytes:
    return orjson.dumps(state.to_obj())


def state_from_json(raw: bytes) -> CardState:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("bad_card_state", f"card state is not JSON: {exc}") from exc
    return CardState.from_obj(obj)


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


def step(state: CardState | None, tx: Transaction) -> tuple[CardState, list[float]]:
    """Features of ``tx`` from the card's state before it, then the state absorbs ``tx``.

    ``state`` itself is never modified: the returned state is a new object, so a caller can
    roll back by keeping the old one. When the amount or the event time is not a finite, sane
    number (NaN, infinite, negative, above 1e12), ``state`` is returned as is and the row has NaN
    in the offending features (nowhere else), for the caller to dead-letter it.
    """
    amount, ts = float(tx.amount), float(tx.ts)
    if not _valid(amount, ts):
        return (CardState() if state is None else state), _invalid_row(amount, ts)
    row = _stateless(tx, amount, ts)
    state = CardState() if state is None else state.copy()
    cents = round(amount * 100.0)
    hour = int(ts // _HOUR)

    # --- features, from the state before tx ---------------------------------------------------
    lo = ts - _HOUR
    c1 = s1 = small = 0
    for t, c in zip(state.r_ts, state.r_c, strict=True):
        if lo < t <= ts:
            c1 += 1
            s1 += c
            if c < _SMALL_CENTS:
                small += 1
    b_h, b_n, b_c = state.b_h, state.b_n, state.b_c
    # Buckets are sorted by hour: the windows are slices, summed in C.
    lo7 = bisect_left(b_h, hour - _HOURS_7D + 1)
    lo24 = bisect_left(b_h, hour - _HOURS_24 + 1, lo7)
    hi = len(b_h) if not b_h or b_h[-1] <= hour else bisect_left(b_h, hour + 1, lo24)
    c24 = sum(b_n[lo24:hi])
    s24 = sum(b_c[lo24:hi])
    c7 = c24 + sum(b_n[lo7:lo24])
    s7 = s24 + sum(b_c[lo7:lo24])
    n = state.n
    ratio = 1.0 if n == 0 else cents * n / max(state.sum_c, n)  # average floored at 1 cent
    last = state.last_ts
    since = -1.0 if n == 0 else max(ts - last, 0.0)

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
    if tx.device_id is not None:
        dh = short_hash(tx.device_id)
        dev = state.dev
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
        ratio,
        since,
        new_merchant,
        new_device,
        foreign,
        float(small),
        float(distinct),
    )

    # --- absorb tx ----------------------------------------------------------------------------
    state.n = n + 1
    state.sum_c += cents
    if ts > last:
        last = ts
        state.last_ts = ts
    newest_hour = int(last // _HOUR)

    r_ts, r_c = state.r_ts, state.r_c
    r_ts.append(ts)
    r_c.append(cents)
    cutoff = last - _HOUR
    if r_ts[0] <= cutoff or len(r_ts) > RECENT_CAP:
        keep = [i for i, t in enumerate(r_ts) if t > cutoff][-RECENT_CAP:]
        state.r_ts = [r_ts[i] for i in keep]
        state.r_c = [r_c[i] for i in keep]

    if b_h and b_h[-1] == hour:
        b_n[-1] += 1
        b_c[-1] += cents
    else:
        i = bisect_left(b_h, hour)
        if i < len(b_h) and b_h[i] == hour:
            b_n[i] += 1
            b_c[i] += cents
        else:
            b_h.insert(i, hour)
            b_n.insert(i, 1)
            b_c.insert(i, cents)
    old = newest_hour - _HOURS_7D
    if b_h[0] <= old:
        j = bisect_left(b_h, old + 1)
        del b_h[:j], b_n[:j], b_c[:j]

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


def step_many(states: MutableMapping[str, CardState], txs: Iterable[Transaction]) -> np.ndarray:
    """The worker's batch path: steps ``txs`` in the given (arrival) order through ``states``.

    ``states`` maps card_id → state and is updated; returns a float64 matrix, one row per tx.
    """
    rows: list[list[float]] = []
    for tx in txs:
        st, row = step(states.get(tx.card_id), tx)
        states[tx.card_id] = st
        rows.append(row)
    return _matrix(rows)


def replay(
    transactions: Iterable[Transaction], states: dict[str, CardState] | None = None
) -> tuple[np.ndarray, list[str]]:
    """The training path: features of every transaction in event-time order.

    Sorts by (ts, transaction_id), steps each event through its card's state and returns the
    float64 matrix (rows in sorted order) and the sorted transaction ids.
    """
    ordered = sorted(transactions, key=lambda t: (t.ts, t.transaction_id))
    X = step_many({} if states is None else states, ordered)
    return X, [t.transaction_id for t in ordered]


def _matrix(rows: list[list[float]]) -> np.ndarray:
    if not rows:
        return np.zeros((0, N_FEATURES), dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)


def row_as_dict(row: list[float] | np.ndarray) -> Mapping[str, float]:
    """A feature row keyed by name (for reasons, logs and debugging)."""
    return {name: float(v) for name, v in zip(FEATURE_NAMES, row, strict=True)}
