"""Prometheus metrics. No per-card or per-transaction labels: cardinality stays bounded by
model versions, decisions and reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from prometheus_client import Counter, Gauge, Histogram

from fraudstream.core.messages import REASONS, DecisionKind, OutcomeKind

if TYPE_CHECKING:
    from fraudstream.core.engine import ServedModel
    from fraudstream.core.messages import Routing
    from fraudstream.core.policy import Policy
    from fraudstream.core.rules import RuleSet

# Dead-letter reason codes by source (the `error.class` header): decoding's, plus the wiring's.
# Every pair is exported at 0 from the start, so rate() and alerts see a series before the first
# dead letter instead of a gap.
_DECODE_REASONS = tuple(r for r in REASONS if r != "bad_routing")
DEAD_LETTER_REASONS: dict[str, tuple[str, ...]] = {
    "transactions": (
        *_DECODE_REASONS,
        "key_mismatch",
        "non_finite_feature",
        "decode_error",
        "scoring_error",
    ),
    "feedback": (*_DECODE_REASONS, "unknown_transaction", "past_retention", "wrong_partition"),
    "join": (*_DECODE_REASONS, "join_error"),
}

TRANSACTIONS = Counter(
    "fraudstream_transactions_received_total", "Transaction records consumed by the worker."
)
DECISIONS = Counter(
    "fraudstream_decisions_total",
    "Decisions written, by decision, deciding model version and variant.",
    ["decision", "model_version", "variant"],
)
DECISION_LATENCY = Histogram(
    "fraudstream_decision_latency_seconds",
    "From the transaction's broker timestamp to its decision being handed to the producer.",
    buckets=(
        0.001,
        0.0025,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.075,
        0.1,
        0.15,
        0.2,
        0.25,
        0.3,
        0.4,
        0.5,
        1,
        2.5,
        5,
        10,
    ),
)
SCORES = Histogram(
    "fraudstream_score",
    "Model scores, by model version and role.",
    ["model_version", "role"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
REVOKED_SKIPPED = Counter(
    "fraudstream_revoked_skipped_total",
    "Buffered transactions left to their partition's new owner after a rebalance.",
)
DUPLICATES = Counter(
    "fraudstream_duplicates_total",
    "Transactions seen again within the dedup window; not re-decided.",
)
DEAD_LETTERS = Counter(
    "fraudstream_dead_letters_total",
    "Records sent to a dead-letter topic, by reason and source topic kind.",
    ["reason", "source"],
)
FEEDBACK_OUTCOMES = Counter(
    "fraudstream_feedback_outcomes_total",
    "Outcomes emitted from labels (a reversal counts again), by model version, variant, outcome.",
    ["model_version", "variant", "outcome"],
)
CONFUSION = Gauge(
    "fraudstream_confusion",
    "Current confusion counts (a reversed label moves a count), summed over the partitions "
    "this worker owns.",
    ["model_version", "variant", "cell"],
)
FEEDBACK_UNKNOWN = Counter(
    "fraudstream_feedback_unknown_total",
    "Labels for transactions never decided here or past retention (dead-lettered).",
)
TRANSACTIONS_MOVED = Counter(
    "fraudstream_transactions_moved_total",
    "Transactions published off their card's partition (a partitioner other than murmur2), "
    "moved to it through the worker's transactions repartition topic.",
)
FEEDBACK_MOVED = Counter(
    "fraudstream_feedback_moved_total",
    "Labels published off their decision's partition (a partitioner other than murmur2), moved "
    "to it through the worker's feedback repartition topic.",
)
JOIN_PRUNED = Counter(
    "fraudstream_join_pruned_total",
    "Join records deleted because their decision is older than the retention horizon.",
)
MODEL_INFO = Gauge(
    "fraudstream_model_info",
    "Loaded model versions (value 1), with role, load time and sha256 prefix.",
    ["version", "role", "loaded_at", "sha256"],
)
MODEL_LOAD_FAILURES = Counter(
    "fraudstream_model_load_failures_total", "Model versions refused at load.", ["version"]
)
CONSUMER_LAG = Gauge(
    "fraudstream_consumer_lag",
    "Records behind the end, per assigned partition.",
    ["topic", "partition"],
)
ROUTING_SHARE = Gauge("fraudstream_challenger_share", "Challenger share of card keys in force.")
POLICY_VERSION = Gauge(
    "fraudstream_policy_version",
    "Decision policy version in force (0: none published, the models' own thresholds).",
)
RULES_VERSION = Gauge(
    "fraudstream_rules_version", "Rule set version in force (0: none published, no rules)."
)
RULE_HITS = Counter(
    "fraudstream_rule_hits_total",
    "Decided transactions a rule hit, by rule id (a transaction can hit several rules).",
    ["rule"],
)
READY = Gauge(
    "fraudstream_ready",
    "1 when the worker is ready (the answer of /readyz: models loaded, partitions assigned and "
    "open, no rebalance in progress), else 0.",
)

for _source, _reasons in DEAD_LETTER_REASONS.items():
    for _reason in _reasons:
        DEAD_LETTERS.labels(reason=_reason, source=_source)


def observe_routing(routing: Routing) -> None:
    """The routing in force (after any refused version fell back to its predecessor)."""
    ROUTING_SHARE.set(routing.challenger_share if routing.challenger else 0.0)


def observe_policy(policy: Policy) -> None:
    POLICY_VERSION.set(policy.version)


def observe_rules(rules: RuleSet) -> None:
    RULES_VERSION.set(rules.version)
    for rule_id in rules.ids:
        RULE_HITS.labels(rule=rule_id)  # 0 series for every rule in force, like the others


def observe_model_loaded(served: ServedModel, role: str) -> None:
    import time

    # 0 series for what this version can now produce, so rates and alerts start at 0.
    MODEL_LOAD_FAILURES.labels(version=served.version)
    for kind in get_args(DecisionKind):
        DECISIONS.labels(decision=kind, model_version=served.version, variant=role)
    for variant in (role, "shadow"):
        for cell in get_args(OutcomeKind):
            FEEDBACK_OUTCOMES.labels(model_version=served.version, variant=variant, outcome=cell)

    for labels in list(MODEL_INFO._metrics):
        if labels[0] == served.version:
            MODEL_INFO.remove(*labels)
    MODEL_INFO.labels(
        version=served.version,
        role=role,
        loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sha256=served.model.meta.sha256[:12],
    ).set(1)


def forget_models_except(keep: set[str]) -> None:
    for labels in list(MODEL_INFO._metrics):
        if labels[0] not in keep:
            MODEL_INFO.remove(*labels)


TXN_COMMITS = Counter(
    "fraudstream_kafka_transactions_committed_total",
    "Kafka transactions committed by the scoring path (one per owned partition per interval).",
)
TXN_ABORTS = Counter(
    "fraudstream_kafka_transactions_aborted_total",
    "Kafka transactions aborted and whose events were decided again.",
)
TXN_COMMIT_SECONDS = Histogram(
    "fraudstream_kafka_transaction_commit_seconds",
    "Time to commit one partition's Kafka transaction (offsets included).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
GC_PAUSE = Histogram(
    "fraudstream_gc_pause_seconds",
    "Pauses of Python's cyclic garbage collector, by generation (2: a full pass).",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CARD_RECORDS = Gauge(
    "fraudstream_card_records",
    "Per-card records held for the partitions this worker owns.",
    ["partition"],
)
REFETCHES = Counter(
    "fraudstream_refetches_total",
    "Holes in a partition's delivered offsets that held records and were fetched again.",
)

# --- entity state (docs/entity-state.md) ------------------------------------------------------
ENTITY_STATES = Gauge(
    "fraudstream_entity_states",
    "Entity states (merchants, cards with labels) an aggregator partition holds.",
    ["partition"],
)
ENTITY_EVENTS = Counter(
    "fraudstream_entity_events_total", "Entity events and watermarks the aggregator absorbed."
)
ENTITY_EVENTS_BAD = Counter(
    "fraudstream_entity_events_bad_total",
    "Entity events the aggregator could not read (dropped; a bug or another version's writer).",
)
ENTITY_TABLE_SIZE = Gauge(
    "fraudstream_entity_table_entries", "Entity states held by this worker's follower."
)
ENTITY_TABLE_BYTES = Gauge(
    "fraudstream_entity_table_bytes", "Bytes of entity states held by this worker's follower."
)
ENTITY_WATERMARK_LAG = Gauge(
    "fraudstream_entity_watermark_lag_seconds",
    "Wall clock minus the entity state's watermark, as this worker's follower sees it.",
)
GATE_WAITS = Counter(
    "fraudstream_entity_gate_waits_total",
    "Times a scoring partition waited for the entity state to reach a transaction's cutoff.",
)
GATE_TIMEOUTS = Counter(
    "fraudstream_entity_gate_timeouts_total",
    "Times a scoring partition stopped waiting for the entity watermark and scored with the "
    "state it had (FRAUD_ENTITY_MAX_WAIT_S): a stalled aggregator or join.",
)
