"""The one frozen settings object, read from ``FRAUD_*`` environment variables.

Only the CLI and the wiring (``fraudstream.app``, ``fraudstream.kafka``) read settings; the pure
core takes plain arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUD_", frozen=True, extra="ignore")

    # --- Kafka connection -------------------------------------------------------------------
    kafka_bootstrap: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    # --- topics -----------------------------------------------------------------------------
    topic_transactions: str = "transactions"
    topic_dlq: str = "transactions.dlq"
    topic_decisions: str = "fraud.decisions"
    topic_scores: str = "fraud.scores"
    topic_feedback: str = "fraud.feedback"
    topic_feedback_dlq: str = "fraud.feedback.dlq"
    topic_outcomes: str = "fraud.outcomes"
    topic_false_positives: str = "fraud.false-positives"
    topic_false_negatives: str = "fraud.false-negatives"
    topic_control: str = "fraud.control"
    topic_metrics: str = "fraud.metrics"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    # --- models and routing (start-up values; fraud.control overrides them live) ------------
    models_dir: Path = Path("models")
    champion: str = "champion-v1"
    challenger: str | None = None
    challenger_share: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: bool = False
    routing_salt: str = "fraudstream"

    # --- worker -----------------------------------------------------------------------------
    app_id: str = "fraudstream"
    data_dir: Path = Path(".fraudstream/worker")
    table_store: str = "rocksdb://"
    # Which roles this worker runs: "score" (transactions → decisions), "join" (feedback →
    # outcomes and label events), "aggregate" (entity events → entity state), any of them.
    # Split them to scale scoring, the join and the aggregator apart.
    roles: str = Field(
        default="score,join,aggregate",
        pattern=r"^\s*(score|join|aggregate)\s*(,\s*(score|join|aggregate)\s*)*$",
    )
    # The most transactions decided in one batch: a fetch is decided in batches of this size.
    batch_size: int = Field(default=512, ge=1, le=10_000)
    dedup_window_hours: float = Field(default=24.0, gt=0)
    # Each owned partition's Kafka transaction (decisions, scores, dead letters, card state and
    # offset) is committed this often: read_committed readers see decisions up to this late.
    commit_interval_ms: float = Field(default=100.0, ge=1.0, le=10_000.0)
    # exactly_once: decisions, card state and offsets in one Kafka transaction per partition
    # (read_committed readers see each decision once, up to a commit interval late).
    # at_least_once: decisions sent as soon as made, offsets committed once they are
    # acknowledged; after a crash some decisions appear twice, with the same key
    # (docs/ARCHITECTURE.md, "Processing guarantees").
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    # How a flagged decision's reasons attribute its score to features: "path" (Saabas path
    # attributions, a few µs per row) or "shap" (exact TreeSHAP, 0.2-2.7 ms per row with this
    # repository's models, so a burst of flagged traffic slows the worker many times over).
    reasons_method: Literal["path", "shap"] = "path"
    # The worker's fetches wait for this many bytes (at most 20 ms), and the scoring path's
    # producers this many ms before sending: fewer, larger requests. With 1 and 1, every record was
    # its own fetch and send at moderate rates, and the worker and the broker each spent about
    # a core on 200 transactions a second (docs/benchmark.md).
    fetch_min_bytes: int = Field(default=1024, ge=1, le=1_048_576)
    produce_linger_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    # A transaction open longer is aborted by the broker (and its events decided again); it is
    # also how long a dead worker's open transaction can hold back read_committed readers when
    # no new owner opens its partition.
    transaction_timeout_ms: int = Field(default=60_000, ge=10_000, le=900_000)
    decision_retention_days: float = Field(default=90.0, gt=0)
    # A scoring partition waits at most this long for the entity state's watermark to reach a
    # transaction's cutoff, then scores with the state it has (counted): a stalled aggregator or
    # join must not stop scoring. Live traffic never waits (docs/entity-state.md).
    # 0: never wait (a replay faster than the clock, as the demo's simulator, whose merchant
    # features then lag by the watermark's round trip).
    entity_max_wait_s: float = Field(default=60.0, ge=0)
    # A label whose decision has not arrived this long after it is dead-lettered as unknown.
    feedback_grace_seconds: float = Field(default=300.0, gt=0)
    # How long a label waiting for its decision holds the feedback watermark back (merchant
    # state waits for it): live, such a label is mostly for an unknown transaction; a replay,
    # whose labels all have their decisions coming, holds them until they come.
    label_hold_back_s: float = Field(default=120.0, ge=0)
    # How often the join deletes its records of decisions older than decision_retention_days
    # (tombstones in its changelog, which compaction then drops): its state stays bounded.
    join_prune_seconds: float = Field(default=3600.0, gt=0)
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    metrics_publish_seconds: float = Field(default=10.0, gt=0)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    # How other workers reach this one (Faust's canonical URL; API requests are forwarded to the
    # card's owner there). Default http://{web_host}:{web_port}; set it when binding 0.0.0.0.
    web_url: str | None = None
    # POST /v1/score answers 503 + Retry-After past this many requests in flight.
    api_max_inflight: int = Field(default=256, ge=1)
    log_level: str = "INFO"
    # One INFO line this often: rate, lag, decision latency p50/p99, commits, API requests.
    progress_interval_s: float = Field(default=30.0, gt=0)
    log_json: bool = False

    @property
    def topic_feedback_repartition(self) -> str:
        """The worker's own topic for labels published off their decision's partition (as
        Kafka Streams names its repartition topics: after the app id)."""
        return f"{self.app_id}-feedback-repartition"

    @property
    def topic_transactions_repartition(self) -> str:
        """The worker's own topic for transactions published off their card's murmur2
        partition, on their way to it."""
        return f"{self.app_id}-transactions-repartition"

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @field_validator("champion", "challenger", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) configuration for every client the project creates."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username is not None:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile is not None:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        return conf

    def topic_names(self) -> dict[str, str]:
        return {
            "transactions": self.topic_transactions,
            "dlq": self.topic_dlq,
            "decisions": self.topic_decisions,
            "scores": self.topic_scores,
            "feedback": self.topic_feedback,
            "feedback_dlq": self.topic_feedback_dlq,
            "outcomes": self.topic_outcomes,
            "false_positives": self.topic_false_positives,
            "false_negatives": self.topic_false_negatives,
            "control": self.topic_control,
            "metrics": self.topic_metrics,
        }


def own_topics(name_format: str) -> dict[str, str]:
    """Topic-name settings of their own, ``name_format.format(name=<default name>)`` each: a run
    (a test, a through-Kafka backtest, a bench) that shares a broker with others."""
    return {
        f"topic_{k}": name_format.format(name=v)
        for k, v in Settings(_env_file=None).topic_names().items()  # type: ignore[call-arg]
    }


def as_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``FRAUD_*`` environment of a worker process (secrets included)."""
    env: dict[str, str] = {}
    for name, raw in settings.model_dump().items():
        if raw is None:
            continue
        value = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
        env[f"FRAUD_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def companion_roles(roles: str) -> str | None:
    """The roles a companion process runs beside workers with ``roles`` (a FRAUD_ROLES value):
    the ones of ``join`` and ``aggregate`` they leave out (None: none left out). `make demo`
    and the bench run one, as a deployment runs them apart (docs/benchmark.md: the join in the
    scoring process cost it a third of its event loop)."""
    have = {r.strip() for r in roles.split(",")}
    rest = [r for r in ("join", "aggregate") if r not in have]
    return ",".join(rest) or None
