"""A labelled history through Kafka: the timeline the offline replay walks (transactions at their
event time, labels at their ``reported_at``, labels first on ties), published as fast as the
broker takes it, and the live workers' scores read back. Used by ``fraudstream backtest
--through-kafka`` and the parity tests (issue 17)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import orjson

from fraudstream.core.messages import Feedback, Transaction, encode_feedback, encode_transaction
from fraudstream.core.replay import LabelEvent
from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import make_consumer, make_producer
from fraudstream.settings import Settings


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


def read_scores(
    s: Settings, want: int, *, timeout: float = 600.0, idle_s: float = 60.0
) -> dict[tuple[str, str], float]:
    """(transaction_id, model_version) -> score from ``fraud.scores`` (read_committed), once
    ``want`` scores are there; raises if none arrive for ``idle_s``, or at ``timeout``."""
    consumer = make_consumer(s, group_id=f"{s.app_id}-backtest-reader")
    consumer.subscribe([s.topic_scores])
    out: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while len(out) < want:
            now = time.monotonic()
            if now > deadline or now - last > idle_s:
                raise BrokerError(
                    f"{len(out)} of {want} scores arrived on {s.topic_scores!r} "
                    f"({'timeout' if now > deadline else f'none for {idle_s:.0f}s'}); "
                    "see the workers' logs"
                )
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is not None or msg.value() is None:
                    continue
                obj = orjson.loads(msg.value() or b"{}")
                out[(obj["transaction_id"], obj["model_version"])] = float(obj["score"])
                last = time.monotonic()
    finally:
        consumer.close()
    return out
