"""The two ceilings, each run as its own process by the harness.

``passthrough``: confluent-kafka consume -> produce the value untouched, no decoding or scoring:
what Python + librdkafka + this broker can move at all.

``handwritten``: confluent-kafka batch consume -> ``decode_transaction`` -> the worker's own core
(``engine.process_batch``: features.step, routing, both models, reasons) with per-card records
in a plain dict -> produce decisions and scores. No framework, no changelog, no per-batch
flush: an upper bound for a worker that does the same work.

    python -m fraudstream.bench.ceilings passthrough|handwritten --bootstrap ... --input ... \
        --decisions ... --scores ... --group ... --models-dir ...
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from fraudstream.bench.common import (
    Pipe,
    consumer_conf,
    load_serving,
    produce,
    producer_conf,
    say_ready,
    take_ready,
)

BATCH = 2000


def _consumer(pipe: Pipe, p: Producer) -> Consumer:
    c = Consumer(consumer_conf(pipe.bootstrap, pipe.group, **{"fetch.min.bytes": 1}))
    announced = False

    def on_assign(_c: Any, parts: Any) -> None:
        nonlocal announced
        if parts and not announced:
            announced = True
            say_ready()

    def on_revoke(_c: Any, parts: Any) -> None:
        # Hand over at the last record decided (two processes in one group): otherwise the
        # new owner decides again what was done since the last timed commit.
        if parts:
            p.flush(30)
            with contextlib.suppress(KafkaException):
                c.commit(asynchronous=False)

    c.subscribe([pipe.input], on_assign=on_assign, on_revoke=on_revoke)
    return c


def passthrough(pipe: Pipe, stop: list[bool]) -> None:
    p = Producer(producer_conf(pipe.bootstrap))
    c = _consumer(pipe, p)
    last_commit = time.monotonic()
    while not stop[0]:
        msgs = take_ready(c, BATCH)
        for m in msgs:
            if m.error():
                continue
            produce(p, pipe.decisions, m.key(), m.value() or b"")
        p.poll(0)
        if msgs and time.monotonic() - last_commit > 1.0:
            c.commit(asynchronous=True)
            last_commit = time.monotonic()
    p.flush(30)
    c.close()


def handwritten(pipe: Pipe, stop: list[bool]) -> None:
    from fraudstream.core import engine
    from fraudstream.core.messages import (
        decode_transaction,
        encode_decision,
        encode_score,
        utc_now_iso,
    )
    from fraudstream.errors import InvalidMessage

    serving = load_serving(pipe.models_dir)
    window_s = 24 * 3600.0
    cards: dict[str, engine.CardRecord] = {}
    p = Producer(producer_conf(pipe.bootstrap))
    c = _consumer(pipe, p)
    last_commit = time.monotonic()
    while not stop[0]:
        msgs = take_ready(c, BATCH)
        txs = []
        for m in msgs:
            if m.error():
                continue
            try:
                tx = decode_transaction(m.value())
            except InvalidMessage:
                continue  # the simulator sends none; a real worker dead-letters them
            txs.append(tx)
        if txs:
            records = {}
            for tx in txs:
                rec = cards.get(tx.card_id)
                if rec is None:
                    rec = cards[tx.card_id] = engine.CardRecord()
                records[tx.card_id] = rec
            results = engine.process_batch(
                serving, txs, records, now_iso=utc_now_iso(), dedup_window_s=window_s
            )
            for r in results:
                if isinstance(r, engine.Scored):
                    key = r.decision.transaction_id.encode()
                    produce(p, pipe.decisions, key, encode_decision(r.decision))
                    for sc in r.scores:
                        produce(p, pipe.scores, key, encode_score(sc))
        p.poll(0)
        if msgs and time.monotonic() - last_commit > 1.0:
            c.commit(asynchronous=True)
            last_commit = time.monotonic()
    p.flush(30)
    c.close()


def main(argv: list[str] | None = None) -> None:
    pipe, ns = Pipe.parse(argv)
    stop = [False]

    def on_term(*_: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if ns.mode == "passthrough":
        passthrough(pipe, stop)
    elif ns.mode == "handwritten":
        handwritten(pipe, stop)
    else:
        sys.exit(f"unknown mode {ns.mode!r}: passthrough or handwritten")


if __name__ == "__main__":
    main()
