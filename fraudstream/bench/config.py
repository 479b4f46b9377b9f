"""What a benchmark run is asked to do: the contenders, their labels and descriptions, the run's
configuration (``--quick`` and the full run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraudstream.bench.common import REPO

CONTENDERS = ("passthrough", "faust_passthrough", "handwritten", "naive", "peer", "worker")
LABELS = {
    "passthrough": "pass-through ceiling",
    "faust_passthrough": "Faust pass-through ceiling",
    "handwritten": "hand-written ceiling",
    "handwritten-2": "hand-written ceiling ×2",
    "naive": "naive baseline (Faust)",
    "peer": "peer (Quix Streams)",
    "worker-2": "worker ×2",
    "worker-1": "worker ×1",
}
DESCRIPTIONS = {
    "passthrough": "confluent-kafka consume → produce the value untouched; no decoding, no scoring",
    "faust_passthrough": "a bare Faust app (the worker's Faust settings, raw bytes topics, "
    "take_events(512, 0.005)) forwarding each event's value with a confluent-kafka producer; no "
    "decoding, no state, no scoring: the most any Faust-based worker can reach here",
    "handwritten": "confluent-kafka batch consume → decode → engine.process_batch (same features "
    "and models) → produce decisions and scores; per-card records in a dict, no framework",
    "handwritten-2": "2 processes of the hand-written ceiling in one consumer group: what two "
    "processes of the same work reach on these cores, next to the broker",
    "naive": "a Faust agent, one event at a time: Table for card state, "
    "booster.predict(DMatrix(row)) per model, await send() per record",
    "peer": "Quix Streams: app.dataframe(topic).apply(score, stateful=True) per message, card "
    "record in Quix State (RocksDB + changelog), to_topic() for decisions and scores",
    "worker-2": "2 processes of `fraudstream worker` sharing the partitions",
    "worker-1": "1 process of `fraudstream worker`",
}


@dataclass
class BenchConfig:
    n: int = 200_000
    partitions: int = 4
    rates: tuple[float, ...] = (1000.0, 2000.0, 5000.0)
    half_max_rate: bool = True  # also offer half the measured single-worker maximum
    rate_seconds: float = 30.0
    # Offered first at the first rate and reported apart: the bench's broker is a fresh JVM
    # whose JIT takes ~30-60 s of load to settle (1,000/s on a cold broker: p50 154 ms, its
    # CPU 106 % of a core; 30 s later: 28 ms, 83 %).
    warmup_seconds: float = 40.0
    cap_seconds: float = 180.0  # a throughput contender that has not finished by then is stopped
    # The naive baseline never finishes a quick run: its rate over a shorter cap is as telling.
    naive_cap_seconds: float | None = None  # None: cap_seconds
    ready_timeout: float = 120.0
    workers: tuple[int, ...] = (2, 1)
    handwritten_x2: bool = True  # two processes of the hand-written ceiling (with "handwritten")
    only: tuple[str, ...] = CONTENDERS
    models_dir: Path = REPO / "models"
    bootstrap: str | None = None  # None: start a LocalBroker in a temp dir
    seed: int = 0
    quick: bool = False
    profile: bool = False  # run the single worker under cProfile; top functions in the result
    profile_out: Path | None = None  # where to keep the raw cProfile file
    api: bool = True  # the scoring-API section (needs "worker" in ``only``)
    api_concurrency: tuple[int, ...] = (1, 16)
    api_seconds: float = 10.0
    api_warmup_s: float = 2.0  # one discarded run before the first concurrency
    api_tool: str = "auto"  # "auto" (wrk if on PATH, else aiohttp), "wrk" or "aiohttp"
    # The worker's processing guarantee in every worker row (FRAUD_PROCESSING_GUARANTEE).
    guarantee: str = "exactly_once"

    @staticmethod
    def quick_config(**kw: Any) -> BenchConfig:
        base: dict[str, Any] = {
            "n": 20_000,
            "rates": (1000.0, 2000.0),
            "half_max_rate": False,
            "rate_seconds": 10.0,
            "warmup_seconds": 15.0,
            "handwritten_x2": False,
            "cap_seconds": 20.0,
            "naive_cap_seconds": 10.0,
            "api_concurrency": (16,),
            "api_seconds": 5.0,
            "api_warmup_s": 1.0,
            "quick": True,
        }
        base.update(kw)
        return BenchConfig(**base)


Log = Callable[[str], None]
