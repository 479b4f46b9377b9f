"""Raising partitions while two workers run under load: nothing lost, decisions continue, every
card keeps its routing variant; shrinking is refused (issue: operate it, scaling partitions).

How running workers meet the new partitions: `topics scale` adds partitions to `transactions` and
to every co-partitioned topic, the workers' table changelogs included. A Faust worker notices a
partition count change at its next consumer metadata refresh (``consumer_metadata_max_age_ms``,
5 minutes by default, env ``CONSUMER_METADATA_MAX_AGE_MS``), which triggers a rebalance; its
producer must also have refreshed its metadata (``PRODUCER_METADATA_MAX_AGE_MS``) before it can
write changelog records to a new partition. The operator procedure that does not wait on either
is a rolling restart, one worker at a time; this test does that when the workers have not started
deciding the new partitions' transactions on their own within ``PICKUP_S``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from fraudstream.core.routing import assign
from fraudstream.kafka.admin import changelog_topic, create_topics, describe_topics
from fraudstream.kafka.clients import read_all
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig
from fraudstream.sim.publisher import PublishStats, publish
from tests.integration.procs import REPO, Worker, fresh_settings, settings_env

pytestmark = pytest.mark.integration

SALT = "scale-salt"
SHARE = 0.3
RATE = 300.0
PICKUP_S = 45.0


def _scale(s: Settings, partitions: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", "topics", "scale", "--partitions", str(partitions)],
        env=settings_env(s),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tx_partitions(s: Settings) -> dict[str, int]:
    return {
        orjson.loads(m.value())["transaction_id"]: int(m.partition() or 0)
        for m in read_all(s, [s.topic_transactions], timeout=60)
    }


def _done_ids(s: Settings) -> tuple[dict[str, dict], set[str]]:
    decisions: dict[str, dict] = {}
    for m in read_all(s, [s.topic_decisions], timeout=60):
        d = orjson.loads(m.value())
        assert d["transaction_id"] not in decisions, "two decisions for one transaction"
        decisions[d["transaction_id"]] = d
    dlq = set()
    for m in read_all(s, [s.topic_dlq], timeout=60):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            dlq.add(str(orjson.loads(m.value())["transaction_id"]))
    return decisions, dlq


def _wait(cond, timeout: float, every: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return False


def test_scale_partitions_under_load_with_two_workers(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = fresh_settings(
        kafka_bootstrap,
        partitions=2,
        champion="champion-v1",
        challenger="challenger-v2",
        challenger_share=SHARE,
        routing_salt=SALT,
    )
    create_topics(s)
    workers = [Worker(s, f"worker-{i}", tmp_path) for i in (1, 2)]
    for w in workers:
        # Notice the new partitions within seconds instead of the 5-minute default.
        w.env["CONSUMER_METADATA_MAX_AGE_MS"] = "5000"
        w.env["PRODUCER_METADATA_MAX_AGE_MS"] = "5000"
        w.start()
    phases: list[tuple[threading.Thread, threading.Event]] = []
    results: list[PublishStats] = []
    errors: list[BaseException] = []

    def start_load(seed: int) -> None:
        stop = threading.Event()

        def load() -> None:
            try:
                results.append(
                    publish(
                        s,
                        n=None,
                        rate=RATE,
                        seed=seed,
                        config=SimConfig(seed=seed, n_cards=1500),
                        feedback=False,
                        record_acked=True,
                        stop=stop,
                    )
                )
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        t = threading.Thread(target=load, name=f"publisher-{seed}", daemon=True)
        t.start()
        phases.append((t, stop))

    def stop_load() -> None:
        for t, stop in phases:
            stop.set()
            t.join(timeout=120)

    restarted = False
    try:
        for w in workers:
            w.wait_ready(timeout=120)
        start_load(seed=5)
        time.sleep(8)  # under load on 2 partitions

        out = _scale(s, 4)
        assert out.returncode == 0, out.stdout + out.stderr
        scaled_at = time.time()
        assert f"{s.topic_transactions}: 2 -> 4" in out.stdout
        have = {name: n for name, n, _ in describe_topics(s)}
        for name in (
            s.topic_transactions,
            s.topic_decisions,
            s.topic_dlq,
            s.topic_feedback,
            changelog_topic(s, "card-state"),
            changelog_topic(s, "decision-join"),
        ):
            assert have[name] == 4, (name, have)
        assert have[s.topic_control] == 1

        # Shrinking is refused, with a reason, and changes nothing.
        shrink = _scale(s, 3)
        assert shrink.returncode == 2, shrink.stdout + shrink.stderr
        assert "Refusing to shrink" in shrink.stderr
        assert {name: n for name, n, _ in describe_topics(s)}[s.topic_transactions] == 4

        # An upstream producer sees the new partitions at its next metadata refresh
        # (librdkafka `topic.metadata.refresh.interval.ms`, 5 minutes by default); a new one
        # at once. The first publisher keeps writing to partitions 0-1 meanwhile.
        time.sleep(3)
        start_load(seed=6)

        def new_partitions_decided() -> bool:
            parts = _tx_partitions(s)
            decided, _ = _done_ids(s)
            return any(p >= 2 and tid in decided for tid, p in parts.items())

        if not _wait(new_partitions_decided, PICKUP_S):
            print(
                f"workers did not decide new partitions within {PICKUP_S:.0f}s of scaling; "
                "doing a rolling restart"
            )
            restarted = True
            for w in workers:
                w.stop()
                w.start()
                w.wait_ready(timeout=120)
            assert _wait(new_partitions_decided, 60)
        time.sleep(8)  # more load on 4 partitions
        for w in workers:
            assert w.proc is not None
            assert w.proc.poll() is None, w.log_tail()
    except BaseException:
        for w in workers:
            w.stop()
        raise
    finally:
        stop_load()
    try:
        assert not errors, errors
        assert len(results) == 2
        assert all(r.failed == 0 for r in results)
        acked = {tid for r in results for tid in r.acked_ids}
        assert len(acked) >= RATE * 10

        def all_done() -> bool:
            decided, dlq = _done_ids(s)
            return acked <= set(decided) | dlq

        _wait(all_done, 180, every=5)  # a loaded machine may still be catching up
        decided, dlq = _done_ids(s)
        missing = acked - set(decided) - dlq
        assert not missing, (
            f"{len(missing)} acknowledged transactions lost, e.g. {sorted(missing)[:5]}"
        )

        # Decisions continued after the scale, on the new partitions too.
        parts = _tx_partitions(s)
        on_new = [tid for tid, p in parts.items() if p >= 2]
        assert len(on_new) > 100
        assert all(tid in decided or tid in dlq for tid in on_new)
        after = [d for d in decided.values() if d["decided_at"] > _iso(scaled_at + 5)]
        assert len(after) > 100

        # Routing is a function of the card only: unchanged by the partition count.
        variants: dict[str, set[str]] = defaultdict(set)
        for d in decided.values():
            variants[d["card_id"]].add(d["variant"])
            assert d["variant"] == assign(d["card_id"], SALT, SHARE), d
        assert all(len(v) == 1 for v in variants.values())
        assert {v for vs in variants.values() for v in vs} == {"champion", "challenger"}
    finally:
        for w in workers:
            w.stop()
    print(f"scaled 2 -> 4 under load; rolling restart needed: {restarted}")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
