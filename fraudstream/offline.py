"""`fraudstream score`: decide transactions from a file in this process, without Kafka.

Transaction JSON lines in, one Decision JSON line out per transaction, made by the worker's own
engine (``core.engine.process_batch``: features, routing, models, thresholds, reasons, dedup) with
the start-up routing of the settings. Per-card state starts empty and builds up in file order, as
it would for a new card in the stream. A line that cannot be decoded or scored is reported with
the reason code the dead-letter topic would carry; it never stops the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fraudstream.core.engine import CardRecord, Rejected, Scored, Serving, process_batch
from fraudstream.core.messages import Transaction, decode_transaction, encode_decision, utc_now_iso
from fraudstream.core.policy import NO_POLICY, Policy
from fraudstream.core.rules import NO_RULES, RuleSet
from fraudstream.errors import InvalidMessage
from fraudstream.settings import Settings


@dataclass
class OfflineRun:
    decided: int = 0
    duplicates: int = 0
    rejected: int = 0


def load_serving(
    settings: Settings, policy: Policy = NO_POLICY, rules: RuleSet = NO_RULES
) -> Serving:
    """The start-up routing's models, loaded and verified (sha256, format, feature names),
    deciding under ``policy`` and ``rules`` (none by default: the models' own thresholds)."""
    from fraudstream.app.serving import load_served
    from fraudstream.kafka.control import startup_routing

    routing = startup_routing(settings)
    versions = [v for v in (routing.champion, routing.challenger) if v]
    models = {v: load_served(settings.models_dir, v) for v in versions}
    return Serving(routing, models, policy, rules, settings.reasons_method)


def score_lines(
    settings: Settings,
    lines: Iterable[bytes],
    emit: Callable[[bytes], None],
    report: Callable[[str], None],
    policy: Policy = NO_POLICY,
    rules: RuleSet = NO_RULES,
) -> OfflineRun:
    """Decide every transaction of ``lines``; ``emit`` gets each Decision (JSON bytes),
    ``report`` one line per transaction that was not decided."""
    serving = load_serving(settings, policy, rules)
    records: defaultdict[str, CardRecord] = defaultdict(CardRecord)
    run = OfflineRun()
    batch: list[Transaction] = []

    def flush() -> None:
        results = process_batch(
            serving,
            batch,
            records,
            now_iso=utc_now_iso(),
            dedup_window_s=settings.dedup_window_hours * 3600,
        )
        for r in results:
            if isinstance(r, Scored):
                run.decided += 1
                emit(encode_decision(r.decision))
            elif isinstance(r, Rejected):
                run.rejected += 1
                report(f"{r.tx.transaction_id}: {r.error.reason}: {r.error.message}")
            else:
                run.duplicates += 1
                report(f"{r.tx.transaction_id}: duplicate: already decided, not decided again")
        batch.clear()

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            batch.append(decode_transaction(line.strip(), settings.max_message_bytes))
        except InvalidMessage as exc:
            run.rejected += 1
            report(f"line {number}: {exc.reason}: {exc.message}")
            continue
        if len(batch) >= settings.batch_size:
            flush()
    if batch:
        flush()
    return run
