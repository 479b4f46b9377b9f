"""The feedback join: decisions and labels by transaction_id, outcomes out, with its timers.

At-least-once with an idempotent join record: a batch's outcomes are flushed before its records
are written back and before its offsets may be committed, and a replayed label or decision finds
its join record and changes no count twice. The join commits its own position per partition (one
past the last record it handled: ``InOrderOffsets``), because Faust's ack counting stalls on the
offsets commit markers take in a transactional topic; the first hole after an assignment or a
seek is checked (``check_heads``) before any commit passes it.

Its state lives in three tables (``JoinTable``: Faust's changelog-backed tables in the worker,
dicts in tests): one join record per transaction, the confusion counts per
``partition|version|variant``, and labels held for a decision not seen yet.

Entity state (docs/entity-state.md): every label applied to a known decision is also sent as
label events (merchant and card) to ``<app>-entity-events``, and ``watermarks`` says, per
feedback partition, up to which ``reported_at`` labels have been sent (held back by a label
still waiting for its decision; the clock when the partition is idle).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from fraudstream.app import metrics
from fraudstream.app.joinentities import EntityLabels
from fraudstream.app.joinheads import JoinHeads, JoinSource, JoinTable, TopicPartition
from fraudstream.app.mover import misplaced
from fraudstream.app.outputs import Output
from fraudstream.app.partitioning import home
from fraudstream.core import outcomes
from fraudstream.core.messages import (
    Outcome,
    decode_decision,
    decode_feedback,
    encode_outcome,
    utc_now_iso,
)
from fraudstream.core.offsets import InOrderOffsets
from fraudstream.core.records import Record
from fraudstream.errors import InvalidMessage
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.join")

# A feedback partition's labels waiting for their decisions at which the join stops reading it
# (pace), and below which it reads it again.
PAUSE_HELD = 2_000
RESUME_HELD = 500


class Join(EntityLabels, JoinHeads):
    def __init__(
        self,
        settings: Settings,
        out: Output,
        *,
        records: JoinTable,
        counts: JoinTable,
        held: JoinTable,
        source: JoinSource,
    ) -> None:
        self.s = settings
        self.out = out
        self.records, self.counts, self.held_labels = records, counts, held
        self.source = source
        self.retention_s = settings.decision_retention_days * 86400.0
        self.offsets: InOrderOffsets[TopicPartition] = InOrderOffsets()
        # Per batch: what was read or changed, by key, with its partition; written back once
        # at the end of the batch, after the batch's outcomes are acknowledged.
        self._records: dict[bytes, tuple[outcomes.JoinRecord | None, int]] = {}
        self._counts: dict[bytes, tuple[outcomes.Confusion, int]] = {}
        self._dirty: set[bytes] = set()
        self._dirty_counts: set[bytes] = set()
        self._sent = 0
        self._paused: set[int] = set()  # feedback partitions not read for now (pace)
        EntityLabels.__init__(self)
        self.hold_back_s = settings.label_hold_back_s

    # --- the agent ------------------------------------------------------------------------------

    async def handle(self, batch: Sequence[Record]) -> None:
        s = self.s
        self._sent = 0
        for rec in batch:
            try:
                if rec.topic == s.topic_decisions:
                    self._on_decision(rec)
                else:
                    self._on_feedback(rec)
            except InvalidMessage as exc:
                source = "join" if rec.topic == s.topic_decisions else "feedback"
                self.out.dead_letter(s.topic_feedback_dlq, rec, exc.reason, exc.message, source)
                self._sent += 1
            except Exception as exc:  # noqa: BLE001 - dead-lettered with its reason
                self.out.dead_letter(s.topic_feedback_dlq, rec, "join_error", repr(exc), "join")
                self._sent += 1
        if self._sent:
            await self.out.flush()  # a stored label must never get ahead of its outcome
        self._write_back()
        for rec in batch:
            self.offsets.handled((rec.topic, rec.partition), rec.offset)
        await self.pace()

    async def pace(self) -> None:
        """Stop reading a feedback partition while too many of its labels wait for their
        decisions, and read it again once few do. Live, labels come days after their
        decisions and nothing waits; a replay, or a backlog of labels after an outage, would
        otherwise fill the held-labels table (a changelog write each) while the decisions
        they wait for are read ever more slowly. Per partition: a partition not read yet has
        no watermark, and every one must report (docs/entity-state.md)."""
        for p, waiting in self.waiting().items():
            tps = [(self.s.topic_feedback, p), (self.s.topic_feedback_repartition, p)]
            if p not in self._paused and waiting >= PAUSE_HELD:
                self._paused.add(p)
                self.source.pause(tps)
                log.info(
                    "feedback partition %d: %d labels wait for their decisions; reading "
                    "decisions until fewer than %d do",
                    p,
                    waiting,
                    RESUME_HELD,
                )
            elif p in self._paused and waiting < RESUME_HELD:
                self._paused.discard(p)
                for tp in tps:
                    # Faust drops what it had fetched of a partition paused meanwhile: read on
                    # from the record after the last one handled. (None handled since the last
                    # assignment or seek: the first one is checked by check_heads.)
                    nxt = self.offsets.position(tp)
                    if nxt is not None and self.source.assigned(tp):
                        await self.source.seek(tp, nxt)
                self.source.resume(tps)
            elif p in self._paused:
                self.source.pause(tps)  # again: a rebalance resumes every partition it assigns

    def restart(self) -> None:
        """After a rebalance: every partition starts over from its committed offset."""
        self.offsets.clear()
        self._paused.clear()

    def _write_back(self) -> None:
        for key in self._dirty:
            rec, p = self._records[key]
            if rec is None:
                self.records.delete(p, key)
            else:
                self.records.put(p, key, orjson.dumps(rec.to_dict()))
        for key in self._dirty_counts:
            conf, p = self._counts[key]
            self.counts.put(p, key, orjson.dumps(conf.to_dict()))
        self._records.clear()
        self._counts.clear()
        self._dirty.clear()
        self._dirty_counts.clear()

    def _load(self, key: bytes, partition: int) -> outcomes.JoinRecord | None:
        if key in self._records:
            return self._records[key][0]
        raw = self.records.get(partition, key)
        rec = outcomes.JoinRecord.from_dict(orjson.loads(raw)) if raw else None
        self._records[key] = (rec, partition)
        return rec

    def _store(self, key: bytes, rec: outcomes.JoinRecord, partition: int) -> None:
        self._records[key] = (rec, partition)
        self._dirty.add(key)

    def _on_decision(self, rec: Record) -> None:
        d = decode_decision(rec.value)
        key = d.transaction_id.encode()
        earlier = self._earlier_held(rec.partition, key)
        if earlier is not None:  # mostly not: one lookup, not two, per decision
            self.held_labels.delete(rec.partition, key)
            self._release(rec.partition, key)
        joined, reverted, new = outcomes.apply_decision_after_label(
            self._load(key, rec.partition), d
        )
        self._store(key, joined, rec.partition)
        for fb in earlier or ():  # reports held before the last one (a reversal) count too
            self._label_events(joined.decided, fb.transaction_id, fb.is_fraud, fb.reported_at)
        if joined.label is not None:
            lab = joined.label
            self._label_events(joined.decided, d.transaction_id, lab.is_fraud, lab.reported_at)
        if reverted or new:
            self._emit(rec.partition, reverted, new)

    def _on_feedback(self, rec: Record) -> None:
        # The join finds a decision only in the partition its transaction_id hashes to.
        n = self.source.partitions(self.s.topic_decisions) or self.s.partitions
        if misplaced(rec, n) is not None:
            if rec.topic == self.s.topic_feedback:
                return  # the mover brings it to the right partition (fraudstream.app.mover)
            # Moved already, yet misplaced: partitions were added while it moved.
            raise InvalidMessage(
                "wrong_partition",
                f"this moved label is in partition {rec.partition} of {rec.topic}, not where "
                f"its transaction_id hashes among {n} partitions: partitions were added while "
                "it moved; publish it again",
            )
        fb = decode_feedback(rec.value)
        # Read: whether applied now or held for its decision, the partition's watermark may
        # pass it (a held label holds it back itself). A replay reads labels long before their
        # decisions; marking only applied ones left the watermark behind for good.
        self._read_up_to(rec.partition, fb.reported_at)
        key = fb.transaction_id.encode()
        joined = self._load(key, rec.partition)
        if joined is None or joined.decided is None:
            # The label may have raced ahead of its decision (a worker catching up reads both
            # topics side by side): hold it; the sweep dead-letters it after a grace period.
            held = outcomes.hold_label(joined, fb, labelled_at=utc_now_iso())
            self._store(key, held, rec.partition)
            value = base64.b64encode(rec.value or b"").decode()
            # Earlier reports held for the same transaction stay (5th element): each one is
            # a label event of its own once the decision arrives (entity state keeps them all);
            # the 6th is the topic it was read from (feedback or its repartition topic).
            prev = self.held_labels.get(rec.partition, key)
            earlier: list[str] = []
            if prev:
                got = orjson.loads(prev)
                earlier = [*(got[4] if len(got) > 4 and isinstance(got[4], list) else []), got[3]]
            entry = orjson.dumps(
                [rec.partition, rec.offset, time.time(), value, earlier, rec.topic]
            )
            self.held_labels.put(rec.partition, key, entry)
            self._hold(rec.partition, key, fb.reported_at)
            return
        self.held_labels.delete(rec.partition, key)
        self._release(rec.partition, key)
        if _age_s(joined.decided.decided_at, fb.reported_at) > self.retention_s:
            metrics.FEEDBACK_UNKNOWN.inc()
            raise InvalidMessage(
                "past_retention",
                "the decision is older than FRAUD_DECISION_RETENTION_DAYS; the label is kept "
                "here only",
            )
        joined, reverted, new = outcomes.apply_label(joined, fb, labelled_at=utc_now_iso())
        self._store(key, joined, rec.partition)
        self._label_events(joined.decided, fb.transaction_id, fb.is_fraud, fb.reported_at)
        if reverted or new:
            self._emit(rec.partition, reverted, new)

    def _emit(self, part: int, reverted: list[Outcome], new: list[Outcome]) -> None:
        s = self.s
        touched: dict[bytes, outcomes.Confusion] = {}
        for o, sign in [*((o, -1) for o in reverted), *((o, 1) for o in new)]:
            mkey = f"{part}|{o.model_version}|{o.variant}".encode()
            if mkey not in touched:
                if mkey in self._counts:
                    base = self._counts[mkey][0]
                else:
                    raw = self.counts.get(part, mkey)
                    base = (
                        outcomes.Confusion.from_dict(orjson.loads(raw))
                        if raw
                        else outcomes.Confusion()
                    )
                touched[mkey] = outcomes.Confusion().merge(base)  # a copy: all or nothing
            if sign < 0:
                touched[mkey].revert(o.outcome, o.amount)
            else:
                touched[mkey].update(o.outcome, o.amount)
        for mkey, conf in touched.items():
            self._counts[mkey] = (conf, part)
            self._dirty_counts.add(mkey)
        self._sent += len(new)
        for o in new:
            payload = encode_outcome(o)
            key = o.transaction_id.encode()
            self.out.send(s.topic_outcomes, key, payload)
            if o.outcome == "FP":
                self.out.send(s.topic_false_positives, key, payload)
            elif o.outcome == "FN":
                self.out.send(s.topic_false_negatives, key, payload)
            metrics.FEEDBACK_OUTCOMES.labels(
                model_version=o.model_version, variant=o.variant, outcome=o.outcome
            ).inc()

    # --- timers -------------------------------------------------------------------------------

    def held(self) -> dict[bytes, tuple[int, int, float, bytes, str]]:
        """Labels held for a decision not seen yet: key -> (partition, offset, held since
        (POSIX s), original value, topic read from)."""
        out = {}
        for key, raw in self.held_labels.items():
            got = orjson.loads(raw)
            p, o, t, v = got[:4]
            # The topic read from: the first string after the 4 fixed items (absent in old ones).
            topic = [x for x in got[4:] if isinstance(x, str)]
            origin = topic[0] if topic else self.s.topic_feedback
            out[bytes(key)] = (int(p), int(o), float(t), base64.b64decode(v), origin)
        return out

    def sweep(self, grace_s: float) -> int:
        """Dead-letter labels whose decision has not arrived within ``grace_s``."""
        now = time.time()
        expired = [(k, v) for k, v in self.held().items() if now - v[2] >= grace_s]
        for key, (partition, offset, _, raw, topic) in expired:
            self.held_labels.delete(partition, key)
            self._release(partition, key)
            got = self.records.get(partition, key)
            joined = outcomes.JoinRecord.from_dict(orjson.loads(got)) if got else None
            if joined is not None and joined.decided is not None:
                continue
            self.records.delete(partition, key)
            metrics.FEEDBACK_UNKNOWN.inc()
            self.out.dead_letter(
                self.s.topic_feedback_dlq,
                Record(topic, partition, offset, key, raw),
                "unknown_transaction",
                f"no decision for this transaction_id arrived within {grace_s:.0f}s of its label "
                "(never decided by this deployment, or past retention); check the id and topic",
                "feedback",
            )
        return len(expired)

    async def sweep_held_labels(self) -> None:
        if self.sweep(self.s.feedback_grace_seconds):
            await self.out.flush()

    async def prune(self, now: float | None = None, chunk: int = 500) -> int:
        """Delete the join records of decisions made before the retention horizon
        (``FRAUD_DECISION_RETENTION_DAYS``): a label for them is refused anyway, and each
        deletion is a tombstone in the table's changelog, which compaction then drops, so the
        table and its changelog hold only the horizon. Returns how many were deleted.

        The scan yields to the event loop every ``chunk`` records. A table changed meanwhile
        may end the scan early (an in-memory table cannot be iterated across changes): what it
        found is deleted, and the next round starts over; dicts iterate oldest first."""
        horizon = (time.time() if now is None else now) - self.retention_s
        # The worker writes decided_at as utc_now_iso does (fixed width, "+00:00"): such strings
        # compare as their instants do, without parsing each one.
        cutoff = datetime.fromtimestamp(horizon, UTC).isoformat(timespec="milliseconds")
        n = self.source.partitions(self.s.topic_decisions) or self.s.partitions
        expired: list[bytes] = []
        try:
            for i, (key, raw) in enumerate(self.records.items(), 1):
                decided = orjson.loads(raw).get("d")
                if decided and _before(decided[6], cutoff, horizon):
                    expired.append(bytes(key))
                if i % chunk == 0:
                    await asyncio.sleep(0)
        except RuntimeError:  # changed during iteration: delete what was found
            log.debug("the join table changed during its pruning scan; continuing next round")
        deleted = 0
        for i, key in enumerate(expired, 1):
            p = home(key, n)
            # A batch under way keeps what it read; a partition given away meanwhile is its new
            # owner's to prune.
            if key not in self._records and self.source.assigned((self.s.topic_decisions, p)):
                self.records.delete(p, key)
                deleted += 1
            if i % chunk == 0:
                await asyncio.sleep(0)
        if deleted:
            metrics.JOIN_PRUNED.inc(deleted)
            log.info("pruned %d join records of decisions past the retention horizon", deleted)
        return deleted

    async def publish_metrics(self) -> None:
        """Per-version counts to the compacted metrics topic and the confusion gauge."""
        book: dict[tuple[str, str], outcomes.Confusion] = {}
        for raw_key, raw in self.counts.items():
            key = raw_key.decode()
            _part, version, variant = key.split("|", 2)
            self.out.send(self.s.topic_metrics, raw_key, raw)
            conf = outcomes.Confusion.from_dict(orjson.loads(raw))
            book[(version, variant)] = book.get((version, variant), outcomes.Confusion()).merge(
                conf
            )
        for (version, variant), conf in book.items():
            for cell in ("tp", "fp", "tn", "fn"):
                metrics.CONFUSION.labels(
                    model_version=version, variant=variant, cell=cell.upper()
                ).set(getattr(conf, cell))
        await self.out.flush()


def _before(timestamp: str, cutoff: str, horizon: float) -> bool:
    """Whether ``timestamp`` is before the horizon (``cutoff`` is it in utc_now_iso's form)."""
    if len(timestamp) == len(cutoff) and timestamp.endswith("+00:00"):
        return timestamp < cutoff
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() < horizon
    except (ValueError, TypeError, AttributeError):
        return False  # unreadable: never pruned for its age


def _age_s(decided_at: str, reported_at: str) -> float:
    try:
        a = datetime.fromisoformat(decided_at.replace("Z", "+00:00"))
        b = datetime.fromisoformat(reported_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (b - a).total_seconds()
