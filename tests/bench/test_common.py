"""The bench's pure helpers."""

from __future__ import annotations

from fraudstream.bench.common import WORKER_KNOBS, worker_knobs
from fraudstream.settings import Settings


def test_worker_knobs_pass_the_set_ones_through() -> None:
    env = {
        "FRAUD_ROLES": "score,aggregate",
        "FRAUD_ENTITY_MAX_WAIT_S": "0",
        "FRAUD_COMMIT_INTERVAL_MS": "",  # set but empty: the worker's default
        "FRAUD_KAFKA_BOOTSTRAP": "elsewhere:9092",  # not a knob: the bench chooses the broker
    }
    assert worker_knobs(env) == {"roles": "score,aggregate", "entity_max_wait_s": "0"}
    assert worker_knobs({}) == {}


def test_every_knob_is_a_worker_setting() -> None:
    assert set(WORKER_KNOBS) <= set(Settings.model_fields)
