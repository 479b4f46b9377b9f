"""Scenarios of processes that stop and come back: the worker SIGTERMed and restarted, SIGKILLed
and restarted (once or several times), and the broker SIGKILLed and restarted on its data."""

from __future__ import annotations

import random
import time
from pathlib import Path

from fraudstream.faults.load import Load, Row, finish, setup
from fraudstream.faults.procs import WorkerProc, workers
from fraudstream.kafka.jvm import free_port
from fraudstream.settings import Settings


def sigkill(
    settings: Settings,
    tmp: Path,
    *,
    kills: int = 3,
    n: int = 6000,
    rate: float = 300.0,
    seed: int = 1,
    partitioner: str = "murmur2_random",
) -> Row:
    """SIGKILL the worker ``kills`` times at random moments under load, restarting each time.
    With ``partitioner="consistent_random"`` (librdkafka's default, CRC32) most transactions
    take the repartition path."""
    started = setup(settings)
    w = WorkerProc(settings, "w1", tmp).start()
    faults: list[str] = []
    times: list[float] = []
    with workers(w):
        w.wait_ready()
        load = Load(settings, n, rate, seed, partitioner).start()
        window = n / rate
        rng = random.Random(seed)
        moments = sorted(rng.uniform(0.1, 0.75) * window for _ in range(kills))
        for at in moments:
            load.sleep_until(at)
            w.kill()
            times.append(time.time())
            faults.append(f"SIGKILL at {load.elapsed():.1f}s")
            w.start()
            w.wait_ready()
        name = f"SIGKILL x{kills}" if kills > 1 else "SIGKILL x1"
        row, _, _ = finish(
            name if partitioner == "murmur2_random" else f"{name} ({partitioner} producer)",
            settings,
            load,
            faults=faults,
            started=started,
            fault_times=times,
        )
    return row


def sigterm_restart(
    settings: Settings, tmp: Path, *, n: int = 2400, rate: float = 300.0, seed: int = 2
) -> Row:
    """SIGTERM the worker under load, wait for it to exit, start it again."""
    started = setup(settings)
    w = WorkerProc(settings, "w1", tmp).start()
    faults: list[str] = []
    with workers(w):
        w.wait_ready()
        load = Load(settings, n, rate, seed).start()
        load.sleep_until(0.35 * n / rate)
        at = time.time()
        code = w.stop()
        faults.append(f"SIGTERM at {at - load.t0:.1f}s, exit {code} after {time.time() - at:.1f}s")
        w.start()
        w.wait_ready()
        row, _, _ = finish(
            "SIGTERM + restart", settings, load, faults=faults, started=started, fault_times=[at]
        )
    return row


def broker_restart(
    settings: Settings,
    tmp: Path,
    *,
    n: int = 4000,
    rate: float = 300.0,
    down_s: float = 6.0,
    seed: int = 3,
) -> Row:
    """SIGKILL a dedicated broker while the worker runs under load; restart it on the same data."""
    from fraudstream.kafka.broker import LocalBroker

    broker = LocalBroker(tmp / "broker")
    info = broker.start(port=free_port())
    s = settings.model_copy(update={"kafka_bootstrap": info.bootstrap})
    try:
        started = setup(s)
        w = WorkerProc(s, "w1", tmp).start()
        faults: list[str] = []
        with workers(w):
            w.wait_ready()
            load = Load(s, n, rate, seed).start()
            load.sleep_until(0.3 * n / rate)
            broker.kill()
            killed_at = time.time()
            faults.append(f"broker SIGKILL at {load.elapsed():.1f}s")
            time.sleep(down_s)
            t = time.monotonic()
            broker.restart()
            faults.append(
                f"broker back at {load.elapsed():.1f}s (restart took {time.monotonic() - t:.1f}s)"
            )
            row, _, _ = finish(
                "broker SIGKILL + restart",
                s,
                load,
                faults=faults,
                started=started,
                timeout=180,
                fault_times=[killed_at],
            )
            # Read once the verdict is in: a worker that dies after the broker returns counts.
            row.notes = "; ".join(filter(None, [row.notes, f"worker after: {w.state()}"]))
        return row
    finally:
        broker.stop()
