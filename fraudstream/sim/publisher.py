"""Publish simulated transactions, and their labels after a delay, to Kafka."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, Message

from fraudstream.core.messages import Feedback, encode_feedback, encode_transaction
from fraudstream.errors import BrokerError
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, SimEvent, feedback_schedule, generate

# The generator's label delays are in simulated days; they are scaled onto the wall clock.
_SIM_DELAY_S = 3 * 86400.0


@dataclass
class PublishStats:
    sent: int = 0
    acked: int = 0
    frauds: int = 0
    labels_sent: int = 0
    labels_acked: int = 0
    failed: int = 0
    acked_ids: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def _chunks(events: Iterator[SimEvent], size: int) -> Iterator[list[SimEvent]]:
    chunk: list[SimEvent] = []
    for e in events:
        chunk.append(e)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def publish(
    settings: Settings,
    *,
    n: int | None,
    rate: float,
    seed: int = 0,
    config: SimConfig | None = None,
    duration_s: float | None = None,
    feedback: bool = True,
    feedback_delay_s: float = 30.0,
    missing_share: float = 0.1,
    reversal_share: float = 0.01,
    legit_label_share: float = 0.05,
    wait_for_labels: bool = True,
    record_acked: bool = False,
    acked_file: Path | None = None,
    progress: Callable[[PublishStats], None] | None = None,
    stop: threading.Event | None = None,
    partitioner: str = "murmur2_random",
) -> PublishStats:
    """Send ``n`` transactions (``None``: until ``duration_s`` or ``stop``) at ``rate`` per second
    (0: as fast as possible); labels follow ``feedback_delay_s`` later on average.
    ``partitioner``: librdkafka's; ``consistent_random`` publishes as its clients do by default."""
    cfg = config or SimConfig(seed=seed)
    producer = make_producer(
        settings, **{"linger.ms": 5, "batch.num.messages": 10000, "partitioner": partitioner}
    )
    stats = PublishStats()
    lock = threading.Lock()
    acked_out = acked_file.open("a") if acked_file else None

    def on_tx(err: KafkaError | None, msg: Message) -> None:
        with lock:
            if err is not None:
                stats.failed += 1
                return
            stats.acked += 1
            if record_acked or acked_out:
                tid = str(orjson.loads(msg.value() or b"{}").get("transaction_id", ""))
                if record_acked:
                    stats.acked_ids.append(tid)
                if acked_out:
                    acked_out.write(tid + "\n")

    def on_label(err: KafkaError | None, _msg: Message) -> None:
        with lock:
            if err is None:
                stats.labels_acked += 1
            else:
                stats.failed += 1

    pending: list[tuple[float, int, Feedback]] = []
    seq = 0
    t0 = time.monotonic()
    last_progress = t0
    stop = stop or threading.Event()

    def send_due_labels(now: float) -> None:
        while pending and pending[0][0] <= now:
            _, _, fb = heapq.heappop(pending)
            _produce(settings.topic_feedback, fb.transaction_id, encode_feedback(fb), on_label)
            stats.labels_sent += 1

    def _produce(topic: str, key: str, value: bytes, cb: Callable[..., None]) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=cb)
                return
            except BufferError:
                producer.poll(0.05)

    try:
        for ci, chunk in enumerate(_chunks(generate(cfg, n=n), 1000)):
            labels = (
                feedback_schedule(
                    chunk,
                    delay_s=_SIM_DELAY_S,
                    missing_share=missing_share,
                    reversal_share=reversal_share,
                    seed=seed * 1_000_003 + ci,
                    legit_label_share=legit_label_share,
                )
                if feedback
                else []
            )
            by_tx: dict[str, list[tuple[float, Feedback]]] = {}
            for due, fb in labels:
                by_tx.setdefault(fb.transaction_id, []).append((due, fb))
            for ev in chunk:
                if stop.is_set() or (
                    duration_s is not None and time.monotonic() - t0 >= duration_s
                ):
                    raise StopIteration
                if rate > 0:
                    target = t0 + stats.sent / rate
                    delay = target - time.monotonic()
                    if delay > 0:
                        producer.poll(0)
                        time.sleep(min(delay, 0.5))
                tx = ev.tx
                _produce(settings.topic_transactions, tx.card_id, encode_transaction(tx), on_tx)
                stats.sent += 1
                stats.frauds += ev.is_fraud
                now = time.monotonic()
                for due, fb in by_tx.get(tx.transaction_id, ()):
                    wall_due = now + feedback_delay_s * (due - tx.ts) / _SIM_DELAY_S
                    heapq.heappush(pending, (wall_due, seq, fb))
                    seq += 1
                send_due_labels(now)
                if stats.sent % 1000 == 0:
                    producer.poll(0)
                if progress and now - last_progress > 0.5:
                    progress(stats)
                    last_progress = now
    except StopIteration:
        pass
    try:
        while wait_for_labels and pending and not stop.is_set():
            if duration_s is not None and time.monotonic() - t0 >= duration_s:
                break
            send_due_labels(time.monotonic())
            producer.poll(0.1)
            if progress and time.monotonic() - last_progress > 0.5:
                progress(stats)
                last_progress = time.monotonic()
        if producer.flush(60) > 0:
            raise BrokerError("Kafka did not acknowledge every record within 60 s")
    finally:
        if acked_out:
            acked_out.close()
    stats.elapsed_s = time.monotonic() - t0
    if progress:
        progress(stats)
    return stats
