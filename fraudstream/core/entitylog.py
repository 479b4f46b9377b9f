"""Entity state as it travels through Kafka (docs/DESIGN-entity-state.md, "Live topology"), pure.

Three kinds of records go to ``<app>-entity-events``, keyed by entity:
- a transaction event per decided transaction (key ``m:<merchant>``), written in the scoring
  transaction of its input partition, so the aggregator absorbs each exactly once;
- label events from the feedback join (keys ``m:<merchant>`` and ``c:<card>``), idempotent;
- watermarks (key ``WATERMARK_KEY``, sent to every partition): "everything of source ``s``
  (``t:<partition>`` of transactions, ``f:<partition>`` of feedback) with time < ``at`` has
  been sent before this record".

The aggregator folds them (``Fold``) into ``EntityState``s and the map {source: at} of its
partition, which it publishes to the compacted ``<app>-entity-state`` under ``WATERMARK_KEY``
after the states of the same commit. A follower's watermark is the minimum over every partition
and every source (``combined``); a transaction at ``t`` is scored once it reaches
``required(t, now)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from fraudstream.core import entity
from fraudstream.core.entity import EntityState
from fraudstream.errors import InvalidMessage

#: The reserved key of watermark records (never an entity key: those start "m:" or "c:").
WATERMARK_KEY = b"\x00watermarks"
NEVER = -math.inf


@dataclass(frozen=True, slots=True)
class TxEvent:
    ts: float
    cents: int


@dataclass(frozen=True, slots=True)
class LabelEvent:
    transaction_id: str
    tx_ts: float
    cents: int
    reported_at: float
    is_fraud: bool


@dataclass(frozen=True, slots=True)
class Watermark:
    source: str
    at: float


Event = TxEvent | LabelEvent | Watermark


def tx_source(partition: int) -> str:
    return f"t:{partition}"


def feedback_source(partition: int) -> str:
    return f"f:{partition}"


def encode_tx(ts: float, cents: int) -> bytes:
    return orjson.dumps({"t": ts, "c": cents})


def encode_label(
    transaction_id: str, tx_ts: float, cents: int, reported_at: float, is_fraud: bool
) -> bytes:
    # A label reported "before" its transaction is taken at the transaction's time, as the
    # offline timeline does (core.replay.Timeline.build).
    at = max(reported_at, tx_ts)
    return orjson.dumps({"l": transaction_id, "t": tx_ts, "c": cents, "r": at, "f": is_fraud})


def encode_watermark(source: str, at: float) -> bytes:
    return orjson.dumps({"s": source, "w": at})


def decode(key: bytes | None, raw: bytes | None) -> Event:
    try:
        obj = orjson.loads(raw or b"")
        if key == WATERMARK_KEY:
            return Watermark(str(obj["s"]), float(obj["w"]))
        if "l" in obj:
            return LabelEvent(
                str(obj["l"]), float(obj["t"]), int(obj["c"]), float(obj["r"]), bool(obj["f"])
            )
        return TxEvent(float(obj["t"]), int(obj["c"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage("decode_error", f"not an entity event: {exc!r}") from exc


def label_events(
    *,
    transaction_id: str,
    merchant_id: str,
    card_id: str,
    tx_ts: float,
    cents: int,
    reported_at: float,
    is_fraud: bool,
) -> list[tuple[bytes, bytes]]:
    """The label events of one label: for the merchant and for the card."""
    value = encode_label(transaction_id, tx_ts, cents, reported_at, is_fraud)
    return [
        (entity.merchant_key(merchant_id).encode(), value),
        (entity.card_key(card_id).encode(), value),
    ]


def encode_marks(marks: Mapping[str, float]) -> bytes:
    return orjson.dumps(dict(sorted(marks.items())))


def decode_marks(raw: bytes | None) -> dict[str, float]:
    if not raw:
        return {}
    return {str(k): float(v) for k, v in orjson.loads(raw).items()}


def combined(
    marks: Mapping[int, Mapping[str, float]], partitions: int, required: Iterable[str]
) -> float:
    """The watermark of the whole state: the minimum over every partition of the entity topics
    and every source, the ``required`` ones (every transactions partition) and any other that
    ever reported (the join's). ``NEVER`` while a partition or a required source is missing."""
    sources = set(required)
    for m in marks.values():
        sources.update(m)
    if not sources:
        return NEVER
    low = math.inf
    for q in range(partitions):
        got = marks.get(q)
        if got is None:
            return NEVER
        for s in sources:
            low = min(low, got.get(s, NEVER))
    return low


def required(ts: float, now: float) -> float:
    """The watermark a transaction at ``ts`` waits for, decided at wall time ``now``: its cutoff,
    but never one in the future (a transaction dated ahead of the clock waits no longer than a
    current one)."""
    return min(entity.cutoff(ts), entity.cutoff(now))


@dataclass(slots=True)
class Fold:
    """One aggregator partition: the entity states and the watermark map it owns, committed and
    pending (what the open transaction changed; dropped if Kafka aborts it). Committed states
    are kept as bytes (a third of the memory of live objects, and what the state topic holds);
    a state is decoded when an event touches it."""

    states: dict[str, bytes] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    pending: dict[str, EntityState] = field(default_factory=dict)
    pending_marks: dict[str, float] = field(default_factory=dict)
    _encoded: dict[str, bytes] = field(default_factory=dict)  # pending, as written

    def restore(self, key: bytes, value: bytes | None) -> None:
        if key == WATERMARK_KEY:
            self.marks = decode_marks(value)
            return
        k = key.decode("utf-8", "replace")
        if value is None:
            self.states.pop(k, None)
        else:
            EntityState.from_bytes(value)  # refuse what this version cannot read, at restore
            self.states[k] = value

    def get(self, key: str) -> EntityState | None:
        got = self.pending.get(key)
        if got is not None:
            return got
        raw = self.states.get(key)
        return None if raw is None else EntityState.from_bytes(raw)

    def _writable(self, key: str) -> EntityState:
        st = self.pending.get(key)
        if st is None:
            raw = self.states.get(key)
            st = EntityState() if raw is None else EntityState.from_bytes(raw)
            self.pending[key] = st
        return st

    def absorb(self, key: bytes | None, event: Event) -> None:
        if isinstance(event, Watermark):
            was = self.pending_marks.get(event.source, self.marks.get(event.source, NEVER))
            if event.at > was:
                self.pending_marks[event.source] = event.at
            return
        if key is None:
            raise InvalidMessage("missing_key", "an entity event must be keyed by its entity")
        st = self._writable(key.decode("utf-8", "replace"))
        if isinstance(event, TxEvent):
            st.absorb_tx(event.ts, event.cents)
        else:
            st.absorb_label(
                event.transaction_id, event.tx_ts, event.cents, event.reported_at, event.is_fraud
            )

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """What the open transaction writes to the state topic: the changed states, then the
        watermark map (after them: a follower that sees the map has seen the states)."""
        self._encoded = {k: st.to_bytes() for k, st in self.pending.items()}
        out: list[tuple[bytes, bytes | None]] = [
            (k.encode(), raw) for k, raw in self._encoded.items()
        ]
        if self.pending_marks:
            out.append((WATERMARK_KEY, encode_marks({**self.marks, **self.pending_marks})))
        return out

    def committed(self) -> None:
        for k, st in self.pending.items():
            raw = self._encoded.get(k)
            self.states[k] = raw if raw is not None else st.to_bytes()
        self.marks.update(self.pending_marks)
        self.pending = {}
        self.pending_marks = {}
        self._encoded = {}

    def aborted(self) -> None:
        self.pending = {}
        self.pending_marks = {}
        self._encoded = {}
