"""The fraud decision as a coordinator handler: a batch of raw `transactions` records goes down
to the core once (``engine.step``) and comes back as decisions, scores and dead letters to send
and card records to keep. The per-card records of each owned partition live here, split into
what Kafka has committed and what the open transaction changed (``CardStore``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence

from fraudstream.app import metrics
from fraudstream.app.serving import ServingManager
from fraudstream.coordinator.ports import Handled, Send
from fraudstream.core import engine
from fraudstream.core.cardstore import CardStore
from fraudstream.core.messages import encode_decision, encode_score, utc_now_iso
from fraudstream.core.records import Record, dead_letter_headers
from fraudstream.errors import FraudStreamError
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.scoring")


class ScoringHandler:
    """Decides transactions; one ``engine.Verdict`` per record."""

    def __init__(self, settings: Settings, serving: ServingManager) -> None:
        self.s = settings
        self.serving = serving
        self.store = CardStore()
        self.window_s = settings.dedup_window_hours * 3600.0

    def restore(self, partition: int, state: Sequence[tuple[bytes, bytes | None]]) -> int:
        records: list[tuple[str, engine.CardRecord | None]] = []
        for key, value in state:
            card = key.decode("utf-8", "replace")
            try:
                records.append((card, None if value is None else engine.record_from_bytes(value)))
            except FraudStreamError:
                # A record this version cannot read must not stall the partition for ever.
                log.exception(
                    "unreadable card record in partition %d; card starts afresh", partition
                )
                records.append((card, None))
        n = self.store.load(partition, records)
        metrics.CARD_RECORDS.labels(partition=str(partition)).set(n)
        return n

    def admit(self, record: Record) -> bool:
        return True  # card features are exact to the event: nothing to wait for

    def step(self, records: Sequence[Record]) -> Handled[engine.Verdict]:
        serving = self.serving.current
        assert serving is not None, "the worker starts only with a champion loaded"
        metrics.TRANSACTIONS.inc(sum(1 for r in records if r.from_log))
        done = engine.step(
            serving,
            records,
            self.store.get,
            max_bytes=self.s.max_message_bytes,
            now_iso=utc_now_iso(),
            dedup_window_s=self.window_s,
        )
        if done.retried_singly:
            log.error("a batch of %d failed as a whole; it was decided one at a time", len(records))
        for (partition, card), rec in done.cards.items():
            self.store.put(partition, card, rec)
        return Handled(self._sends(done.verdicts), [v for _, v in done.verdicts])

    def _sends(self, verdicts: Sequence[tuple[Record, engine.Verdict]]) -> list[Send]:
        s = self.s
        out: list[Send] = []
        wall = time.time()
        # Metrics are counted per batch and label set: per event they cost ~12 µs.
        decided: Counter[tuple[str, str, str]] = Counter()
        scores: dict[tuple[str, str], list[float]] = {}
        dead: Counter[str] = Counter()
        rule_hits: Counter[str] = Counter()
        duplicates = 0
        for rec, verdict in verdicts:
            p = rec.partition
            if isinstance(verdict, engine.Scored):
                d = verdict.decision
                key = d.transaction_id.encode()
                out.append(Send(p, s.topic_decisions, key, encode_decision(d)))
                for sc in verdict.scores:
                    out.append(Send(p, s.topic_scores, key, encode_score(sc)))
                    scores.setdefault((sc.model_version, sc.role), []).append(sc.score)
                decided[(d.decision, d.model_version, d.variant)] += 1
                rule_hits.update(c.ref for c in d.reason_codes if c.source == "rule")
                if rec.timestamp:
                    metrics.DECISION_LATENCY.observe(max(0.0, wall - rec.timestamp))
            elif isinstance(verdict, engine.Refused):
                headers = dead_letter_headers(rec, verdict.reason, verdict.message)
                out.append(Send(p, s.topic_dlq, rec.key, rec.value, headers))
                dead[verdict.reason] += 1
            else:
                duplicates += 1
        for (kind, version, variant), n in decided.items():
            metrics.DECISIONS.labels(decision=kind, model_version=version, variant=variant).inc(n)
        for (version, role), values in scores.items():
            histogram = metrics.SCORES.labels(model_version=version, role=role)
            for value in values:
                histogram.observe(value)
        for rule, n in rule_hits.items():
            metrics.RULE_HITS.labels(rule=rule).inc(n)
        for reason, n in dead.items():
            metrics.DEAD_LETTERS.labels(reason=reason, source="transactions").inc(n)
        if duplicates:
            metrics.DUPLICATES.inc(duplicates)
        return out

    def changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        return [
            (card.encode(), engine.record_to_bytes(rec))
            for card, rec in self.store.pending(partition).items()
        ]

    def committed(self, partition: int) -> None:
        self.store.commit(partition)
        metrics.CARD_RECORDS.labels(partition=str(partition)).set(self.store.size(partition))

    def aborted(self, partition: int) -> None:
        self.store.abort(partition)

    def drop(self, partition: int) -> None:
        self.store.drop(partition)
        with contextlib.suppress(KeyError):
            metrics.CARD_RECORDS.remove(str(partition))
