"""The Faust pass-through ceiling: a bare Faust app with the worker's Faust settings where they
matter for throughput (``broker_max_poll_records=2000``, ``stream_buffer_maxsize=8192``, raw
bytes topics, ``take_events(512, 0.005)``), whose agent forwards each event's value untouched to
the decisions topic with a confluent-kafka producer (the worker's producer settings). No
decoding, no state, no scoring: what any Faust-based worker can at most reach on this machine.

The worker's throughput divided by this row says how much of Faust's own budget its work costs;
the gap between this row and the hand-written ceiling is the framework's, not the worker's.

    python -m fraudstream.bench.faust_passthrough --bootstrap ... --input ... --decisions ... \
        --scores ... --group ... --models-dir ... --state-dir ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BATCH = 512  # the worker's batch_size
WITHIN_S = 0.005  # what the worker's scoring agent used before it took whole fetches


def build(pipe: Any) -> Any:
    import faust
    from confluent_kafka import Producer

    from fraudstream.bench.common import produce, producer_conf, say_ready

    app = faust.App(
        pipe.group,
        broker=f"kafka://{pipe.bootstrap}",
        store="memory://",
        datadir=str(Path(pipe.state_dir) / pipe.group),
        topic_partitions=pipe.partitions,
        topic_replication_factor=1,
        topic_disable_leader=True,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=8192,
        broker_max_poll_records=2000,
        web_enabled=False,
        logging_config=None,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    tx_topic = app.topic(pipe.input, partitions=pipe.partitions, **raw)
    producer = Producer(producer_conf(pipe.bootstrap))
    decisions = pipe.decisions

    announced = [False]

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any = None, **_: Any) -> None:
        if assigned and not announced[0]:
            announced[0] = True
            say_ready()

    @app.agent(tx_topic)
    async def forward(stream: Any) -> None:
        async for events in stream.take_events(BATCH, WITHIN_S):
            for event in events:
                m = event.message
                produce(producer, decisions, m.key, m.value or b"")
            producer.poll(0)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _flush(sender: Any, **_: Any) -> None:
        producer.flush(10)

    return app


def main(argv: list[str] | None = None) -> None:
    from fraudstream.bench.common import run_faust_contender

    run_faust_contender(build, argv)


if __name__ == "__main__":
    main()
