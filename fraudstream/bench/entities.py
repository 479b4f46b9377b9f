"""Entity state at scale (issue 17 item 3): the follower's memory at N merchants and its recovery
time (reading the compacted entity-state topic from the start).

    python -m fraudstream.bench.entities --merchants 1000000 [--bootstrap HOST:PORT]

Merchants get a month of traffic each, from 1 to ~200 transactions a day (log-uniform: most are
small, a few are busy), and one in ten a few labels: the states the aggregator would write. The
memory figure is the follower's table (``key -> bytes``, as it holds it) in a fresh process: RSS
after minus RSS before, beside the bytes themselves. With ``--bootstrap`` the states are also
published to a fresh compacted topic and a follower reads them back, timed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import time
import uuid
from typing import Any

from fraudstream.core.entity import EntityState

DAY = 86400.0
END = 1_780_000_000.0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def profiles(n: int = 64, seed: int = 1) -> list[bytes]:
    """``n`` merchant states of different sizes (a month of traffic, some labels)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        per_day = math.exp(rng.uniform(0.0, math.log(200.0)))
        st = EntityState()
        t = END - 30 * DAY
        while t < END:
            st.absorb_tx(t, rng.randrange(100, 20_000))
            t += rng.expovariate(per_day / DAY)
        if i % 10 == 0:
            for k in range(rng.randrange(1, 6)):
                ts = END - rng.uniform(1, 25) * DAY
                st.absorb_label(f"tx-{i}-{k}", ts, 5000, ts + 3 * DAY, rng.random() < 0.5)
        out.append(st.to_bytes())
    return out


def memory(merchants: int) -> dict[str, Any]:
    shapes = profiles()
    gc.collect()
    before = _rss()
    table: dict[str, bytes] = {}
    total = 0
    for i in range(merchants):
        raw = bytes(bytearray(shapes[i % len(shapes)]))  # an object of its own, as read
        table[f"m:merchant-{i:09d}"] = raw
        total += len(raw)
    gc.collect()
    after = _rss()
    return {
        "merchants": merchants,
        "state_bytes": total,
        "avg_state_bytes": total / max(1, merchants),
        "rss_increase_bytes": after - before,
        "rss_after_bytes": after,
    }


def recovery(bootstrap: str, merchants: int) -> dict[str, Any]:
    from confluent_kafka import Producer

    from fraudstream.app.entities import EntityFollower
    from fraudstream.core import entitylog
    from fraudstream.kafka.admin import create_topics, entity_state_topic
    from fraudstream.settings import Settings, own_topics

    uid = uuid.uuid4().hex[:8]
    topics = own_topics(f"benchent.{uid}.{{name}}")
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "app_id": f"benchent-{uid}",
        "partitions": 2,
        **topics,
    }
    s = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    create_topics(s)
    shapes = profiles()
    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4",
         "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    t0 = time.perf_counter()
    for i in range(merchants):
        key = f"m:merchant-{i:09d}".encode()
        while True:
            try:
                p.produce(entity_state_topic(s), key=key, value=shapes[i % len(shapes)])
                break
            except BufferError:
                p.poll(0.05)
    marks = entitylog.encode_marks({"t:0": END, "t:1": END, "f:0": END, "f:1": END})
    for q in range(2):
        p.produce(entity_state_topic(s), key=entitylog.WATERMARK_KEY, value=marks, partition=q)
    assert p.flush(300) == 0
    published = time.perf_counter() - t0
    follower = EntityFollower(s)
    t0 = time.perf_counter()
    follower.start()
    try:
        if not follower.ready.wait(1800):
            raise RuntimeError("the follower did not load the topic in 30 minutes")
        loaded = time.perf_counter() - t0
    finally:
        follower.stop()
    return {
        "merchants": merchants,
        "published_s": published,
        "recovery_s": loaded,
        "recovery_per_s": merchants / loaded,
        "follower_entries": len(follower.raw),
        "watermark_ok": follower.watermark == END,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--merchants", type=int, default=1_000_000)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"memory": memory(args.merchants)}
    gc.collect()
    if args.bootstrap:
        out["recovery"] = recovery(args.bootstrap, args.merchants)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
