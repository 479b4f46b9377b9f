"""Scenarios of the worker group changing members under load: a second worker joining and leaving
(1 → 2 → 1), and a worker frozen past its session timeout and resumed (SIGSTOP, SIGCONT)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from fraudstream.faults.load import Load, Row, finish, setup
from fraudstream.faults.procs import SESSION_TIMEOUT_S, WorkerProc, workers
from fraudstream.settings import Settings


class OffsetWatcher:
    """Polls the worker group's committed offsets on ``topic`` and records every time one moves
    backwards (a member committing a stale position)."""

    def __init__(self, settings: Settings, topic: str, interval: float = 0.1) -> None:
        self.settings, self.topic, self.interval = settings, topic, interval
        self.regressions: list[str] = []
        self.history: list[tuple[float, dict[int, int]]] = []  # every change, for post-mortems
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OffsetWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**self.settings.kafka_client_config(), "log_level": 0})
        tps = [TopicPartition(self.topic, p) for p in range(self.settings.partitions)]
        last: dict[int, int] = {}
        while not self._stop.wait(self.interval):
            try:
                futures = admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(self.settings.app_id, tps)], request_timeout=5
                )
                got = next(iter(futures.values())).result().topic_partitions or []
            except Exception:  # noqa: BLE001, S112 - broker busy; try again
                continue
            now = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
            if now != last:
                self.history.append((time.time(), now))
            for tp in got:
                before = last.get(tp.partition)
                if tp.offset >= 0 and before is not None and tp.offset < before:
                    self.regressions.append(
                        f"p{tp.partition} {before}->{tp.offset} at {time.strftime('%H:%M:%S')}"
                    )
                if tp.offset >= 0:
                    last[tp.partition] = tp.offset


def scale(
    settings: Settings, tmp: Path, *, n: int = 3000, rate: float = 300.0, seed: int = 4
) -> Row:
    """1 → 2 → 1 workers under load: the second joins, then leaves with SIGTERM."""
    s = settings.model_copy(update={"partitions": max(settings.partitions, 4)})
    started = setup(s)
    a = WorkerProc(s, "w1", tmp).start()
    b = WorkerProc(s, "w2", tmp)
    faults: list[str] = []
    with workers(a, b):
        a.wait_ready()
        load = Load(s, n, rate, seed).start()
        load.sleep_until(0.15 * n / rate)
        b.start()
        faults.append(f"w2 started at {load.elapsed():.1f}s")
        b.wait_ready()
        faults.append(f"w2 ready at {load.elapsed():.1f}s")
        load.sleep_until(max(load.elapsed() + 2.0, 0.55 * n / rate))
        code = b.stop()
        faults.append(f"w2 SIGTERM at {load.elapsed():.1f}s, exit {code}")
        row, _, _ = finish("scale 1→2→1", s, load, faults=faults, started=started)
    return row


def sigstop(
    settings: Settings,
    tmp: Path,
    *,
    n: int = 9000,
    rate: float = 300.0,
    pause_s: float = SESSION_TIMEOUT_S + 8.0,
    seed: int = 5,
) -> Row:
    """Two workers; one is frozen with SIGSTOP past its session timeout, then resumed. The group
    moves its partitions to the other; on resume it must not write decisions for them."""
    s = settings.model_copy(update={"partitions": max(settings.partitions, 4)})
    started = setup(s)
    a = WorkerProc(s, "w1", tmp).start()
    b = WorkerProc(s, "w2", tmp).start()
    faults: list[str] = []
    with workers(a, b):
        a.wait_ready()
        b.wait_ready()
        # Both own partitions before the load starts.
        deadline = time.monotonic() + 60
        while not (a.ready() and b.ready()) and time.monotonic() < deadline:
            time.sleep(0.25)
        watcher = OffsetWatcher(s, s.topic_transactions).__enter__()
        load = Load(s, n, rate, seed).start()
        load.sleep_until(0.15 * n / rate)
        a.signal(signal.SIGSTOP)
        faults.append(f"w1 SIGSTOP at {load.elapsed():.1f}s")
        time.sleep(pause_s)
        a.signal(signal.SIGCONT)
        faults.append(f"w1 SIGCONT at {load.elapsed():.1f}s (paused {pause_s:.0f}s)")
        resumed_at = time.time()
        row, _, stamps = finish(
            "SIGSTOP past session timeout",
            s,
            load,
            faults=faults,
            started=started,
            timeout=180,
        )
        watcher.__exit__()
        # Who wrote the duplicates: the later copy of an id within a few seconds of SIGCONT is
        # the resumed worker deciding records it had fetched for partitions it no longer owned.
        copies: dict[str, list[float]] = {}
        for tid, ts in stamps:
            copies.setdefault(tid, []).append(ts)
        later = [sorted(v)[1] for v in copies.values() if len(v) > 1]
        zombie = sum(1 for ts in later if resumed_at <= ts <= resumed_at + 3.0)
        row.notes = (
            f"duplicates whose second copy was written within 3 s after SIGCONT (the resumed "
            f"worker, before it noticed it had left the group): {zombie} of {len(later)}; "
            f"w1 alive after resume: {a.alive()}; committed offsets of `transactions` that "
            f"moved backwards: {watcher.regressions or 'none'}; w1 log: "
            f"{a.log_count('UnknownMemberIdError')} commits refused (UnknownMemberId), "
            f"{a.log_count('Discarded commit for revoked')} commits discarded (revoked partitions)"
        )
    return row
