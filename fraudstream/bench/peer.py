"""The peer: the same pipeline in Quix Streams, written the way its documentation recommends.

``app.dataframe(topic).apply(score, stateful=True)`` handles one message at a time; the per-card
record (feature state + seen ids) lives in Quix's own ``State`` (RocksDB with a changelog topic,
like the worker's Faust table). ``score`` calls the worker's own core (``engine.process_batch``
on a batch of one), so the decisions are the worker's. Two branches write the decision and the
scores with ``to_topic``; the record key becomes the ``transaction_id``, as in the contract.

Needs the optional ``bench`` extra (``pip install 'fraudstream[bench]'``).

    python -m fraudstream.bench.peer --bootstrap ... --input ... --decisions ... --scores ... \
        --group ... --models-dir ... --state-dir ...
"""

from __future__ import annotations

from typing import Any


def build(pipe: Any) -> tuple[Any, Any]:
    from quixstreams import Application, State
    from quixstreams.models.serializers import SerializationContext, Serializer

    from fraudstream.bench.common import load_serving, say_ready
    from fraudstream.core import engine
    from fraudstream.core.messages import (
        decode_transaction,
        encode_decision,
        encode_score,
        utc_now_iso,
    )

    serving = load_serving(pipe.models_dir)
    window_s = 24 * 3600.0

    class SecondItem(Serializer):  # (key, payload bytes) -> payload bytes
        def __call__(self, value: Any, ctx: SerializationContext) -> bytes:
            return value[1]

    announced = [False]

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        if not announced[0]:
            announced[0] = True
            say_ready()

    app = Application(
        broker_address=pipe.bootstrap,
        consumer_group=pipe.group,
        auto_offset_reset="earliest",
        state_dir=f"{pipe.state_dir}/{pipe.group}",
        loglevel="WARNING",
        on_message_processed=on_processed,
        producer_extra_config={"linger.ms": 2, "compression.type": "lz4"},
    )
    source = app.topic(pipe.input, value_deserializer="bytes", key_deserializer="bytes")
    decisions = app.topic(pipe.decisions, value_serializer=SecondItem(), key_serializer="bytes")
    scores = app.topic(pipe.scores, value_serializer=SecondItem(), key_serializer="bytes")

    def score(value: bytes, state: State) -> list[tuple[bytes, bytes]]:
        tx = decode_transaction(value)
        raw = state.get("r")
        rec = engine.record_from_bytes(raw.encode() if raw else None)
        results = engine.process_batch(
            serving, [tx], {tx.card_id: rec}, now_iso=utc_now_iso(), dedup_window_s=window_s
        )
        state.set("r", engine.record_to_bytes(rec).decode())
        out = []
        for r in results:
            if isinstance(r, engine.Scored):
                tid = r.decision.transaction_id.encode()
                out.append((tid, encode_decision(r.decision)))
                out.extend((tid, encode_score(s)) for s in r.scores)
        return out

    sdf = app.dataframe(source)
    sdf = sdf.apply(score, stateful=True)
    # Branches: the first item is the decision, the rest are the scores.
    sdf.apply(lambda items: items[:1], expand=True).to_topic(decisions, key=lambda v: v[0])
    sdf.apply(lambda items: items[1:], expand=True).to_topic(scores, key=lambda v: v[0])
    return app, sdf


def main(argv: list[str] | None = None) -> None:
    from fraudstream.bench.common import Pipe

    pipe, _ = Pipe.parse(argv)
    app, _sdf = build(pipe)
    app.run()


if __name__ == "__main__":
    main()
