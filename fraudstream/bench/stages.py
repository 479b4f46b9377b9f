"""The machine a run is on, and the stage costs of the worker's core in this process (where a
transaction's time goes, no Kafka): the first section of a run."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.bench.common import CHAMPION


def machine_info() -> dict[str, Any]:
    import confluent_kafka
    import xgboost

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "numpy": np.__version__,
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
        info["psutil"] = psutil.__version__
    except ImportError:
        info["psutil"] = None
    for mod in ("faust", "quixstreams", "orjson"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def warm_state(seed: int, before: float, days: float = 4.0) -> tuple[dict[str, Any], Any]:
    """Card states and entity state after ``days`` of the simulated world (another seed's),
    shifted to end at ``before``, labels arriving by the feedback schedule (one-day delays)."""
    from dataclasses import replace

    from fraudstream.core import features
    from fraudstream.core.replay import Entities, LabelEvent, Timeline
    from fraudstream.sim.generator import SimConfig, feedback_schedule, generate

    events = list(generate(SimConfig(seed=seed + 1), days=days))
    shift = before - 1.0 - events[-1].tx.ts
    txs = [replace(e.tx, ts=e.tx.ts + shift) for e in events]
    labels = [
        LabelEvent(fb.transaction_id, due + shift, fb.is_fraud)
        for due, fb in feedback_schedule(events, delay_s=86400.0, seed=seed)
    ]
    states: dict[str, Any] = {}
    ents = Entities()
    for group in Timeline.build(txs, labels).groups(ents):
        for tx in group:
            states[tx.card_id], _ = features.step(states.get(tx.card_id), tx, ents.get)
    return states, ents


def stage_costs(txs: list[Any], models_dir: Path, seed: int = 0) -> dict[str, float]:
    """Microseconds per transaction of each stage of the worker's core, in this process."""
    from fraudstream.bench.common import load_serving
    from fraudstream.core import engine, features
    from fraudstream.core.entity import nothing_known
    from fraudstream.core.messages import (
        decode_transaction,
        encode_decision,
        encode_score,
        encode_transaction,
        utc_now_iso,
    )

    serving = load_serving(models_dir)
    raws = [encode_transaction(t) for t in txs]
    n = len(raws)
    out: dict[str, float] = {}

    t = time.perf_counter()
    decoded = [decode_transaction(r) for r in raws]
    out["decode_transaction"] = (time.perf_counter() - t) / n * 1e6

    # Card and entity state as a worker that has run a while holds them: four days of the same
    # simulated world replayed first, with labels by the feedback schedule (one-day delays).
    states, ents = warm_state(seed, decoded[0].ts)
    warm_states = {k: v.copy() for k, v in states.items()}
    rows = []
    t = time.perf_counter()
    for tx in decoded:
        states[tx.card_id], row = features.step(states.get(tx.card_id), tx, ents.get)
        rows.append(row)
    out["features.step (card and entity features)"] = (time.perf_counter() - t) / n * 1e6
    states = {k: v.copy() for k, v in warm_states.items()}
    t = time.perf_counter()
    for tx in decoded:
        states[tx.card_id], row = features.step(states.get(tx.card_id), tx, nothing_known)
    out["features.step (card features only, entity lookup empty)"] = (
        (time.perf_counter() - t) / n * 1e6
    )

    x = np.asarray(rows, dtype=np.float32)
    model = serving.models[CHAMPION].model
    t = time.perf_counter()
    for i in range(0, n, 512):
        model.predict(x[i : i + 512])
    out["predict (one model, batches of 512)"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for i in range(min(n, 512)):
        model.predict(x[i : i + 1])
    out["predict (one model, one row)"] = (time.perf_counter() - t) / min(n, 512) * 1e6
    for method in ("path", "shap"):
        t = time.perf_counter()
        model.contributions(x[:512], method)
        out[f"contributions, {method} (per flagged row, batch of 512)"] = (
            (time.perf_counter() - t) / 512 * 1e6
        )

    records = {k: engine.CardRecord(v.copy()) for k, v in warm_states.items()}
    results = []
    t = time.perf_counter()
    for i in range(0, n, 512):
        batch = decoded[i : i + 512]
        recs = {tx.card_id: records.setdefault(tx.card_id, engine.CardRecord()) for tx in batch}
        results += engine.process_batch(
            serving, batch, recs, now_iso=utc_now_iso(), dedup_window_s=86400.0,
            entities=ents.get,
        )  # fmt: skip
    out["engine.process_batch (features, 2 models, reasons), batches of 512"] = (
        (time.perf_counter() - t) / n * 1e6
    )

    t = time.perf_counter()
    for r in results:
        if isinstance(r, engine.Scored):
            encode_decision(r.decision)
            for s in r.scores:
                encode_score(s)
    out["encode decision + 2 scores"] = (time.perf_counter() - t) / n * 1e6

    t = time.perf_counter()
    for rec in records.values():
        engine.record_from_bytes(engine.record_to_bytes(rec))
    out["card record to/from bytes (per card)"] = (
        (time.perf_counter() - t) / max(1, len(records)) * 1e6
    )
    return {k: round(v, 2) for k, v in out.items()}
