"""Model hot swap in a running worker: a good version is swapped in live; a corrupted, truncated,
sha-mismatched or pickled one is refused and the old version keeps deciding, with no gap."""

from __future__ import annotations

import json
import pickle
import shutil
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from fraudstream.core.messages import Routing, encode_transaction, utc_now_iso
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer, read_all
from fraudstream.kafka.control import publish_routing
from fraudstream.settings import Settings
from fraudstream.sim.generator import SimConfig, generate
from tests.integration.procs import REPO, Worker, wait_for

pytestmark = pytest.mark.integration


def _broken_copies(models: Path) -> list[str]:
    src = models / "champion-v1"
    names = []
    for kind in ("bitflip", "truncated", "sha", "pickle"):
        name = f"broken-{kind}"
        dst = models / name
        shutil.copytree(src, dst)
        meta = json.loads((dst / "metadata.json").read_text())
        meta["version"] = name
        model = dst / meta["model_file"]
        data = bytearray(model.read_bytes())
        if kind == "bitflip":
            data[len(data) // 2] ^= 0x40
        elif kind == "truncated":
            data = data[: len(data) // 3]
        elif kind == "pickle":
            data = bytearray(pickle.dumps({"not": "a model"}))
        model.write_bytes(bytes(data))
        if kind == "sha":
            meta["sha256"] = "0" * 64
        (dst / "metadata.json").write_text(json.dumps(meta))
        names.append(name)
    return names


def test_refused_versions_leave_the_old_one_deciding_and_a_good_one_swaps_in(
    broker_settings: Settings, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(REPO / "models", models)
    broken = _broken_copies(models)
    s = broker_settings.model_copy(update={"models_dir": models})
    create_topics(s)
    w = Worker(s, "worker-swap", tmp_path).start()
    try:
        w.wait_ready()
        events = list(generate(SimConfig(seed=77, n_cards=300), n=4400))
        producer = make_producer(s)
        routing = Routing("champion-v1", None, 0.0, False, "swap", "")
        sent = 0
        for name in [*broken, "challenger-v2"]:
            publish_routing(s, replace(routing, champion=name, updated_at=utc_now_iso()))
            # Keep traffic flowing while the worker loads (or refuses) the version.
            for e in events[sent : sent + 800]:
                producer.produce(
                    s.topic_transactions, key=e.tx.card_id, value=encode_transaction(e.tx)
                )
            sent += 800
            assert producer.flush(30) == 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, view = w.get("/v1/models")
                done = {f["version"] for f in view["refused"]} | {view["routing"]["champion"]}
                if name in done:
                    break
                time.sleep(0.3)
        # And traffic after the good swap is decided by the new champion.
        for e in events[sent : sent + 400]:
            producer.produce(s.topic_transactions, key=e.tx.card_id, value=encode_transaction(e.tx))
        sent += 400
        assert producer.flush(30) == 0
        decisions = [orjson.loads(m.value()) for m in wait_for(s, [s.topic_decisions], sent)]
        assert len({d["transaction_id"] for d in decisions}) == sent  # no gap, nothing lost
        used = {d["model_version"] for d in decisions}
        assert used <= {"champion-v1", "challenger-v2"}
        assert "challenger-v2" in used
        _, view = w.get("/v1/models")
        assert view["routing"]["champion"] == "challenger-v2"
        assert {f["version"] for f in view["refused"]} == set(broken)
        _, text = w.get("/metrics")
        for name in broken:
            assert f'fraudstream_model_load_failures_total{{version="{name}"}} 1.0' in text
        assert not read_all(s, [s.topic_dlq])
    finally:
        w.stop()
