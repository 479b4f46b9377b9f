"""What every fault scenario shares: the simulator's publisher as load (it records what the broker
acknowledged), and the run's verdict made into a :class:`Row`.

Each scenario takes Settings (topics, app id, bootstrap) and a scratch folder, runs its faults
while the load is being published, waits until the verdict is clean (or a deadline), and returns
a :class:`Row`. It asserts nothing: the tests do, so that a failing run still reports its figures.

Recovery time is read from the output, not from the fault injector: the longest gap between two
consecutive decisions (their broker timestamps) while the load was running — the outage a
downstream consumer saw, fault and recovery together.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fraudstream.faults.verifier import Sent, Verdict, wait_and_verify
from fraudstream.kafka.admin import create_topics
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from fraudstream.sim.publisher import PublishStats, publish


@dataclass
class Row:
    scenario: str
    events: int  # acknowledged records published
    lost: int
    duplicated: int
    phantom: int
    dead_lettered: int
    final_lag: int | None
    recovery_s: float  # longest gap between decisions under load
    converge_s: float  # from the end of the load to a clean verdict
    duration_s: float
    faults: list[str] = field(default_factory=list)
    notes: str = ""
    reasons: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    measured_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dump(row: Row) -> str:
    return json.dumps(row.as_dict(), indent=2, ensure_ascii=False)


class Load:
    """The simulator publishing ``n`` transactions at ``rate``/s in a thread, recording every id
    the broker acknowledged."""

    def __init__(
        self,
        settings: Settings,
        n: int,
        rate: float,
        seed: int,
        partitioner: str = "murmur2_random",
    ) -> None:
        self.settings, self.n, self.rate, self.seed = settings, n, rate, seed
        self.partitioner = partitioner
        self.stats: PublishStats | None = None
        self.error: BaseException | None = None
        self.t0 = self.t1 = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stats = publish(
                self.settings,
                n=self.n,
                rate=self.rate,
                seed=self.seed,
                config=SimConfig(seed=self.seed, n_cards=max(100, self.n // 4)),
                feedback=False,
                record_acked=True,
                partitioner=self.partitioner,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc
        finally:
            self.t1 = time.time()

    def start(self) -> Load:
        self.t0 = time.time()
        self._thread.start()
        return self

    def elapsed(self) -> float:
        return time.time() - self.t0

    def join(self, timeout: float = 600.0) -> PublishStats:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.stats is not None, "the load did not finish"
        return self.stats

    def sleep_until(self, at_s: float) -> None:
        """Sleep until ``at_s`` seconds after the load started."""
        delay = self.t0 + at_s - time.time()
        if delay > 0:
            time.sleep(delay)


def longest_gap(stamps: list[tuple[str, float]], t0: float, t1: float) -> float:
    """The longest time without a decision between ``t0`` and ``t1`` (the load window)."""
    times = sorted(ts for _, ts in stamps if t0 <= ts <= t1 + 60)
    if not times:
        return t1 - t0
    edges = [t0, *times]
    gaps = [b - a for a, b in itertools.pairwise(edges)]
    return max(gaps)


def resumed_after(stamps: list[tuple[str, float]], fault_at: float) -> float | None:
    """Seconds from ``fault_at`` to the first decision written after it."""
    later = [ts for _, ts in stamps if ts > fault_at]
    return min(later) - fault_at if later else None


def finish(
    scenario: str,
    settings: Settings,
    load: Load,
    *,
    extra_acked: list[Sent] | None = None,
    faults: list[str],
    notes: str = "",
    timeout: float = 120.0,
    started: float,
    fault_times: Sequence[float] = (),
) -> tuple[Row, Verdict, list[tuple[str, float]]]:
    stats = load.join()
    acked: list[Sent | str] = [*stats.acked_ids, *(extra_acked or [])]
    sent_ids = {a if isinstance(a, str) else a.transaction_id for a in acked} - {None}
    verdict, stamps, converge = wait_and_verify(
        settings,
        acked,
        timeout=timeout,
        sent_ids=[*sent_ids, *_all_sim_ids(load)],  # type: ignore[list-item]
    )
    row = Row(
        scenario=scenario,
        events=len(acked),
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        phantom=verdict.phantom,
        dead_lettered=verdict.dead_letters,
        final_lag=verdict.lag,
        recovery_s=round(longest_gap(stamps, load.t0, load.t1), 2),
        converge_s=round(converge, 1),
        duration_s=round(time.time() - started, 1),
        faults=faults,
        notes=notes,
        reasons=verdict.reasons,
        samples={
            "lost": verdict.lost_sample,
            "duplicated": verdict.duplicated_sample,
            "phantom": verdict.phantom_sample,
            "lag_by_topic": [f"{k}={v}" for k, v in verdict.lag_by_topic.items()],
        },
        measured_at=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    )
    if fault_times:
        resumed = [resumed_after(stamps, f) for f in fault_times]
        row.notes = (
            "first decision after each fault: "
            + ", ".join("none" if r is None else f"{r:.1f}s" for r in resumed)
            + (f"; {notes}" if notes else "")
        )
    return row, verdict, stamps


def _all_sim_ids(load: Load) -> list[str]:
    """Every id the load could have sent (acknowledged or not): a decision outside these and the
    acknowledged extras is a phantom."""
    cfg = SimConfig(seed=load.seed, n_cards=max(100, load.n // 4))
    return [e.tx.transaction_id for e in generate(cfg, n=load.n)]


def setup(settings: Settings) -> float:
    create_topics(settings)
    return time.time()
