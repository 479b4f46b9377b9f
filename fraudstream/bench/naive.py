"""The naive baseline: a Faust agent that handles one event at a time, the way a first version
usually looks — a Faust Table for per-card state, ``booster.predict(xgboost.DMatrix(row))`` per
model per event (deciding model, then the shadow model), SHAP reasons for flagged events with
another DMatrix, and an ``await topic.send()`` per output record.

It computes the same features (``core.features.step``), the same routing (``core.routing``) and
the same decisions as the worker, so its output is comparable; only the execution style differs.

    python -m fraudstream.bench.naive --bootstrap ... --input ... --decisions ... --scores ... \
        --group ... --models-dir ... --state-dir ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build(pipe: Any) -> Any:
    import faust
    import numpy as np
    import xgboost as xgb

    from fraudstream.bench.common import load_serving, say_ready
    from fraudstream.core import engine, features
    from fraudstream.core.entity import nothing_known
    from fraudstream.core.messages import (
        Decision,
        Score,
        decode_transaction,
        encode_decision,
        encode_score,
        utc_now_iso,
    )
    from fraudstream.core.policy import decide, top_reasons
    from fraudstream.core.routing import assign

    serving = load_serving(pipe.models_dir)
    routing = serving.routing
    names = list(features.FEATURE_NAMES)

    app = faust.App(
        pipe.group,
        broker=f"kafka://{pipe.bootstrap}",
        store="memory://",
        datadir=str(Path(pipe.state_dir) / pipe.group),
        topic_partitions=pipe.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
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
    decisions = app.topic(pipe.decisions, partitions=pipe.partitions, **raw)
    scores = app.topic(pipe.scores, partitions=pipe.partitions, **raw)
    cards = app.Table("cards", key_type=bytes, value_type=bytes, partitions=pipe.partitions)

    announced = [False]

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any = None, **_: Any) -> None:
        if assigned and not announced[0]:
            announced[0] = True
            say_ready()

    def predict(version: str, row: list[float]) -> tuple[float, Any]:
        booster = serving.models[version].model.booster
        dm = xgb.DMatrix(np.array([row], dtype=np.float32), feature_names=names)
        return float(booster.predict(dm)[0]), dm

    @app.agent(tx_topic)
    async def score(stream: Any) -> None:
        async for event in stream.events():
            tx = decode_transaction(event.message.value)
            key = tx.card_id.encode()
            rec = engine.record_from_bytes(cards.get(key))
            if tx.transaction_id in rec.seen:
                continue
            rec.state, row = features.step(rec.state, tx, nothing_known)
            rec.seen[tx.transaction_id] = tx.ts
            variant = assign(tx.card_id, routing.salt, routing.challenger_share)
            version = routing.challenger if variant == "challenger" else routing.champion
            other = routing.champion if variant == "challenger" else routing.challenger
            assert version is not None
            assert other is not None
            served = serving.models[version]
            s, dm = predict(version, row)
            kind = decide(s, served.thresholds)
            reasons: tuple[Any, ...] = ()
            if kind != "approve":
                contribs = served.model.booster.predict(dm, pred_contribs=True)[0]
                reasons = top_reasons(contribs, names, np.asarray(row))
            s2, _ = predict(other, row)
            now = utc_now_iso()
            d = Decision(
                tx.transaction_id, tx.card_id, kind, s, version, variant, reasons, now,
                tx.amount, tx.currency,
            )  # fmt: skip
            cards[key] = engine.record_to_bytes(rec)
            tid = tx.transaction_id.encode()
            await decisions.send(key=tid, value=encode_decision(d))
            await scores.send(
                key=tid,
                value=encode_score(Score(tx.transaction_id, version, variant, s, now, kind)),
            )
            await scores.send(
                key=tid,
                value=encode_score(
                    Score(
                        tx.transaction_id,
                        other,
                        "shadow",
                        s2,
                        now,
                        decide(s2, serving.models[other].thresholds),
                    )
                ),
            )

    return app


def main(argv: list[str] | None = None) -> None:
    from fraudstream.bench.common import run_faust_contender

    run_faust_contender(build, argv)


if __name__ == "__main__":
    main()
