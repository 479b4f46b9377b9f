"""A labelled history through Kafka: the timeline the offline replay walks (transactions at their
event time, labels at their ``reported_at``, labels first on ties), published as fast as the
broker takes it, and the live workers' scores read back. Used by ``fraudstream backtest
--through-kafka`` and the parity tests (issue 17)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudstream.core.messages import (
    Decision,
    Feedback,
    Score,
    Transaction,
    decode_decision,
    decode_score,
    encode_feedback,
    encode_transaction,
)
from fraudstream.core.replay import LabelEvent
from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import make_consumer, make_producer
from fraudstream.settings import Settings, as_env, own_topics


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def publish_timeline(
    s: Settings, txs: Sequence[Transaction], labels: Iterable[LabelEvent], *, source: str = "replay"
) -> tuple[int, int]:
    """Publish ``txs`` (key card_id) and ``labels`` (key transaction_id) in one time order;
    returns (transactions, labels) sent."""
    timeline: list[tuple[float, int, str, bytes, bytes]] = [
        (tx.ts, 1, s.topic_transactions, tx.card_id.encode(), encode_transaction(tx)) for tx in txs
    ]
    n_labels = 0
    for lab in labels:
        fb = Feedback(lab.transaction_id, lab.is_fraud, source, iso(lab.reported_at))
        timeline.append(
            (lab.reported_at, 0, s.topic_feedback, lab.transaction_id.encode(), encode_feedback(fb))
        )
        n_labels += 1
    timeline.sort(key=lambda e: (e[0], e[1]))
    producer = make_producer(
        s, **{"linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000}
    )
    for _, _, topic, key, value in timeline:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(120)
    if left:
        raise BrokerError(f"{left} records were not delivered to {s.kafka_bootstrap}")
    return len(txs), n_labels


def settings_for(
    bootstrap: str,
    models_dir: Path,
    champion: str,
    challenger: str | None,
    share: float,
    shadow: bool,
    *,
    partitions: int,
    salt: str = "fraudstream",
) -> Settings:
    """Settings of a through-Kafka run: topics and an app id of its own (nothing shared with a
    deployment on the same broker), labels held as long as a replay needs."""
    uid = uuid.uuid4().hex[:8]
    topics = own_topics(f"backtest.{uid}.{{name}}")
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "app_id": f"backtest-{uid}",
        "models_dir": models_dir,
        "partitions": partitions,
        "champion": champion,
        "challenger": challenger,
        "challenger_share": share if challenger else 0.0,
        "shadow": bool(challenger) and (shadow or share == 0.0),
        "routing_salt": salt,
        # The join reads every label at once while decisions come at the scoring's pace.
        "feedback_grace_seconds": 30 * 86400.0,
        "decision_retention_days": 3650.0,
        "entity_max_wait_s": 600.0,
        # Every label published has its decision coming: merchant state waits for each.
        "label_hold_back_s": 30 * 86400.0,
        "log_level": "INFO",
        **topics,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def worker_env(s: Settings, *, web_port: int, data_dir: Path) -> dict[str, str]:
    return {**as_env(s), "FRAUD_WEB_PORT": str(web_port), "FRAUD_DATA_DIR": str(data_dir)}


@dataclass(slots=True)
class Collected:
    decisions: dict[str, Decision] = field(default_factory=dict)
    scores: dict[tuple[str, str], Score] = field(default_factory=dict)
    dead: int = 0


def collect(
    s: Settings,
    want: int,
    *,
    idle_s: float = 600.0,
    alive: Callable[[], bool] = lambda: True,
    progress: Callable[[int, int], None] | None = None,
) -> Collected:
    """Read decisions, scores and dead letters (read_committed) until ``want`` transactions
    are decided or dead-lettered; raises when nothing arrives for ``idle_s`` or a worker
    died."""
    consumer = make_consumer(s, group_id=f"{s.app_id}-backtest-reader")
    consumer.subscribe([s.topic_decisions, s.topic_scores, s.topic_dlq])
    got = Collected()
    last = time.monotonic()
    try:
        while len(got.decisions) + got.dead < want:
            if not alive():
                raise BrokerError("a worker stopped before every transaction was decided")
            if time.monotonic() - last > idle_s:
                raise BrokerError(
                    f"{len(got.decisions)} of {want} transactions decided, then nothing for "
                    f"{idle_s:.0f}s; see the workers' logs"
                )
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is not None:
                    continue
                topic, value = msg.topic(), msg.value()
                if topic == s.topic_decisions:
                    d = decode_decision(value)
                    got.decisions[d.transaction_id] = d
                elif topic == s.topic_scores:
                    sc = decode_score(value)
                    got.scores[(sc.transaction_id, sc.model_version)] = sc
                else:
                    got.dead += 1
                last = time.monotonic()
            if progress is not None:
                progress(len(got.decisions) + got.dead, want)
    finally:
        consumer.close()
    return got


def score_through_kafka(
    s: Settings,
    txs: Sequence[Transaction],
    labels: Iterable[LabelEvent],
    *,
    workers: int = 1,
    log_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Collected:
    """Publish the timeline, then decide it with ``workers`` live worker processes (published
    first: the workers replay it as fast as they can, the gate keeping entity state at every
    cutoff); the decisions and scores they wrote."""
    from fraudstream.bench.procs import Proc
    from fraudstream.kafka.admin import create_topics
    from fraudstream.kafka.broker import free_port

    create_topics(s)
    publish_timeline(s, txs, labels)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    # The join in a process of its own: it finds every label published at once and holds them
    # for decisions still to come; in the scoring process that work starved scoring (no
    # decision in the first two minutes of the Handbook's 1.3 M labels).
    names = [(f"worker-{i}", "score") for i in range(workers)] + [
        ("aggregate", "aggregate"),
        ("join", "join"),
    ]
    for name, roles in names:
        port = free_port()
        env = {
            **worker_env(s, web_port=port, data_dir=log_dir / f"{name}-data"),
            "FRAUD_ROLES": roles,
        }
        procs.append(
            Proc(name, [sys.executable, "-m", "fraudstream", "worker"], log_dir, env, port)
        )
    try:
        for p in procs:
            p.start()
        return collect(s, len(txs), alive=lambda: all(p.alive() for p in procs), progress=progress)
    finally:
        for p in procs:
            p.stop()
