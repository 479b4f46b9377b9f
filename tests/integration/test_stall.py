"""Quiet, useful logs under load (issue 19): Faust's stall detector stays enabled and watches
the scoring path's real progress. A worker under steady load for longer than the detector's
window logs no WARNING or ERROR, and its INFO shows the periodic progress line; a worker whose
scoring path is really stalled is reported by the detector.

The window is Faust's (``stream_processing_timeout`` and ``broker_commit_livelock_soft_timeout``,
5 minutes by default); these tests shorten it through Faust's own environment variables so
that a run takes seconds. The stall is real: the worker process imports a ``sitecustomize``
that makes the coordinator stop deciding after its first batches."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from fraudstream.core.messages import encode_transaction
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import Worker, fresh_settings, wait_for

pytestmark = pytest.mark.integration

# The detector's window in these runs (it checks every 2.5 s): longer than the join takes to
# commit its first offsets after start on a loaded machine (~10 s: it checks its first hole).
WINDOW_S = 12
FAUST_WINDOW = {
    "STREAM_PROCESSING_TIMEOUT": str(WINDOW_S),
    "BROKER_COMMIT_LIVELOCK_SOFT_TIMEOUT": str(WINDOW_S),
}
STALL = """
import asyncio
from fraudstream.coordinator.coordinator import Coordinator

_handle = Coordinator.handle
_batches = [0]


async def handle(self, records):
    _batches[0] += 1
    if _batches[0] > 3:
        await asyncio.Event().wait()  # the scoring path hangs; the rest of the worker runs
    return await _handle(self, records)


Coordinator.handle = handle
"""


def _publish(s: Settings, *, rate: float, seconds: float, stop: threading.Event) -> int:
    txs = [e.tx for e in generate(SimConfig(seed=19, n_cards=200), n=int(rate * seconds))]
    p = make_producer(s, **{"linger.ms": 5})
    sent = 0
    t0 = time.monotonic()
    for i, tx in enumerate(txs):
        if stop.is_set():
            break
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        p.produce(s.topic_transactions, key=tx.card_id.encode(), value=encode_transaction(tx))
        p.poll(0)
        sent += 1
    assert p.flush(30) == 0
    return sent


def _worker(s: Settings, tmp_path: Path, name: str) -> Worker:
    w = Worker(s, name, tmp_path, progress_interval_s=2)
    w.env.update(FAUST_WINDOW)
    return w


LEVEL = re.compile(r"\] (WARNING|ERROR|CRITICAL) ")


def test_a_worker_under_load_past_the_window_logs_no_warning_and_shows_progress(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = fresh_settings(kafka_bootstrap)
    create_topics(s)
    w = _worker(s, tmp_path, "steady").start()
    try:
        w.wait_ready(timeout=120)
        started = w.log_path.stat().st_size
        # Load for longer than the window, and two checks of the detector after it.
        sent = _publish(s, rate=200, seconds=WINDOW_S + 4, stop=threading.Event())
        assert len(wait_for(s, [s.topic_decisions], sent, timeout=60)) >= sent
        time.sleep(5)
        assert w.proc is not None
        assert w.proc.poll() is None, w.log_tail()
    finally:
        w.stop()
    text = w.log_path.read_bytes()[started:].decode(errors="replace")
    loud = [line for line in text.splitlines() if LEVEL.search(line)]
    assert not loud, "\n".join(loud[:20])
    assert re.search(r"INFO fraudstream\.progress: progress: \d+ transactions in", text), text[
        -3000:
    ]


def test_a_stalled_scoring_path_is_reported(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = fresh_settings(kafka_bootstrap)
    create_topics(s)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STALL)
    w = _worker(s, tmp_path, "stalled")
    w.env["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    w.start()
    stop = threading.Event()
    publisher = threading.Thread(
        target=_publish, args=(s,), kwargs={"rate": 100, "seconds": 60, "stop": stop}
    )
    try:
        w.wait_ready(timeout=120)
        publisher.start()
        deadline = time.monotonic() + 3 * WINDOW_S + 20
        found = None
        while time.monotonic() < deadline and found is None:
            time.sleep(1)
            # Which of Faust's stall errors depends on where the fetch stops: its stream check,
            # or its fetch check (the full feed holds the fetch loop).
            found = re.search(
                r"ERROR faust\.transport\.drivers\.aiokafka: .*"
                rf"TP\(topic='{re.escape(s.topic_transactions)}'",
                w.log_path.read_text(errors="replace"),
            )
        assert found, w.log_tail(80)
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join(60)
        w.stop()
