"""The feedback join's part in entity state (docs/entity-state.md): label events for every label
applied to a known decision (every report held before it, too), and the feedback watermarks."""

from __future__ import annotations

import base64
import contextlib
import heapq
import time
from datetime import datetime
from typing import Any

import orjson

from fraudstream.app.outputs import Output
from fraudstream.core import entitylog, features, outcomes
from fraudstream.core.messages import Feedback, decode_feedback
from fraudstream.errors import InvalidMessage

# A label waiting for its decision holds the feedback watermark back for this long (wall clock)
# at most (FRAUD_LABEL_HOLD_BACK_S). Live, a label no decision will come for (an unknown id)
# would otherwise hold every scoring partition for FRAUD_FEEDBACK_GRACE_SECONDS; below the
# cutoff's 5-minute slack, so live traffic never waits for it. A replay holds each until its
# decision comes (fraudstream.backtest.stream).
HOLD_BACK_S = 120.0
# An idle feedback partition reports the clock this often at most (as scoring's do).
IDLE_EVERY_S = 60.0


class EntityLabels:
    """Mixed into ``Join``: what it sends to ``<app>-entity-events``."""

    out: Output
    held_labels: Any
    _sent: int

    def __init__(self) -> None:
        self.events_topic = ""  # entity events: off until the wiring names the topic
        self.label_marks: dict[int, float] = {}  # feedback partition -> newest reported_at read
        self.reported: dict[int, float] = {}  # feedback partition -> watermark sent
        # Labels waiting for their decision, per feedback partition: key -> since (wall clock),
        # and a heap of (reported_at, since, key) to find the oldest without a scan.
        self._holding: dict[int, dict[bytes, float]] = {}
        self._heaps: dict[int, list[tuple[float, float, bytes]]] = {}
        self.hold_back_s = HOLD_BACK_S  # FRAUD_LABEL_HOLD_BACK_S in the worker

    def _hold(self, partition: int, key: bytes, reported_at: str) -> None:
        at = posix(reported_at)
        if at is None:
            return
        now = time.time()
        self._holding.setdefault(partition, {}).setdefault(key, now)
        heapq.heappush(self._heaps.setdefault(partition, []), (at, now, key))

    def _release(self, partition: int, key: bytes) -> None:
        self._holding.get(partition, {}).pop(key, None)

    def _read_up_to(self, partition: int, reported_at: str) -> None:
        at = posix(reported_at)
        if at is not None and at > self.label_marks.get(partition, entitylog.NEVER):
            self.label_marks[partition] = at

    def waiting(self) -> dict[int, int]:
        """Feedback partition -> how many of its labels wait for their decisions."""
        return {p: len(h) for p, h in self._holding.items()}

    def _held_min(self, partition: int, now: float) -> float | None:
        heap, holding = self._heaps[partition], self._holding.get(partition, {})
        while heap and (heap[0][2] not in holding or now - heap[0][1] > self.hold_back_s):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _earlier_held(self, partition: int, key: bytes) -> list[Feedback] | None:
        """The reports held for ``key`` before its last one (None: no label is held for it)."""
        raw = self.held_labels.get(partition, key)
        if not raw:
            return None
        got = orjson.loads(raw)
        out = []
        for value in got[4] if len(got) > 4 and isinstance(got[4], list) else []:
            with contextlib.suppress(InvalidMessage):
                out.append(decode_feedback(base64.b64decode(value)))
        return out

    def _label_events(
        self, d: outcomes.Decided | None, tx_id: str, is_fraud: bool, reported_at: str
    ) -> None:
        if not self.events_topic or d is None:
            return
        tx_ts, at = posix(d.event_time), posix(reported_at)
        if not d.merchant_id or not d.card_id or tx_ts is None or at is None:
            return  # a decision written before decisions carried them
        for key, value in entitylog.label_events(
            transaction_id=tx_id,
            merchant_id=d.merchant_id,
            card_id=d.card_id,
            tx_ts=tx_ts,
            cents=features.cents_of(d.amount),
            reported_at=at,
            is_fraud=is_fraud,
        ):
            self.out.send(self.events_topic, key, value)
            self._sent += 1

    def watermarks(self, idle: set[int], partitions: int) -> int:
        """Send each owned feedback partition's watermark to every entity-events partition when
        it moved: the newest ``reported_at`` read (each label read before it was sent or is
        held), held back by the oldest label that waits for its decision; the clock for an
        ``idle`` partition with nothing held."""
        if not self.events_topic:
            return 0
        now = time.time()
        held = {p: at for p in list(self._heaps) if (at := self._held_min(p, now)) is not None}
        sent = 0
        for p in sorted(set(self.label_marks) | idle | set(held)):
            mark = time.time() if p in idle and p not in held else self.label_marks.get(p)
            if p in held:
                mark = held[p] if mark is None else min(mark, held[p])
            if mark is None:
                continue
            last = self.reported.get(p, entitylog.NEVER)
            if mark <= last or (p in idle and p not in held and mark - last < IDLE_EVERY_S):
                continue
            self.reported[p] = mark
            value = entitylog.encode_watermark(entitylog.feedback_source(p), mark)
            for q in range(partitions):
                self.out.send(self.events_topic, entitylog.WATERMARK_KEY, value, partition=q)
                sent += 1
        return sent


def posix(when: str) -> float | None:
    try:
        return datetime.fromisoformat(when.upper().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
