"""The Faust boundary: the internals it relies on are pinned here, so that a Faust, aiokafka or
mode upgrade that changes one fails this test instead of a worker in the middle of a rebalance;
the import check names what is missing; the subclasses are in place on a new app."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import aiokafka
import faust
import pytest
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from fraudstream.app import faust_boundary
from fraudstream.app.app import create_app
from fraudstream.errors import FaustIncompatible
from fraudstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# What the boundary overrides or calls, as the tested versions define it.
SIGNATURES = {
    (faust_consumer.Consumer, "_wait_next_records"): (
        "(self, timeout: float) -> Tuple[Optional[Mapping[faust.types.tuples.TP, List[Any]]], "
        "Optional[Set[faust.types.tuples.TP]]]"
    ),
    (faust_consumer.Consumer, "_new_offset"): (
        "(self, tp: faust.types.tuples.TP) -> Optional[int]"
    ),
    (driver.Consumer, "_new_consumer_thread"): "(self) -> 'AIOKafkaConsumerThread'",
    (driver.Consumer, "_commit"): "(self, offsets: Mapping[faust.types.tuples.TP, int]) -> bool",
    (driver.AIOKafkaConsumerThread, "_create_worker_consumer"): (
        "(self, transport: 'Transport') -> aiokafka.consumer.consumer.AIOKafkaConsumer"
    ),
    (driver.Producer, "flush"): "(self) -> None",
    (FlowControlEvent, "resume"): "(self) -> None",
    (FlowControlEvent, "__init__"): (
        "(self, *, initially_suspended: bool = True, "
        "loop: Optional[asyncio.events.AbstractEventLoop] = None) -> None"
    ),
}


@pytest.mark.parametrize(
    ("owner", "name"), list(SIGNATURES), ids=[f"{o.__name__}.{n}" for o, n in SIGNATURES]
)
def test_the_internals_overridden_have_the_signatures_tested(owner: type, name: str) -> None:
    assert str(inspect.signature(getattr(owner, name))) == SIGNATURES[(owner, name)]


def test_every_internal_used_is_checked_at_import() -> None:
    faust_boundary.check_privates()  # what the module did at import
    assert len(faust_boundary.PRIVATES) >= 15
    # aiokafka keeps its constructor's settings where the boundary changes them.
    params = inspect.signature(aiokafka.AIOKafkaConsumer.__init__).parameters
    assert {"isolation_level", "fetch_max_wait_ms", "fetch_min_bytes"} <= set(params)

    async def build() -> None:
        c = aiokafka.AIOKafkaConsumer(
            bootstrap_servers="127.0.0.1:1",
            isolation_level="read_committed",
            fetch_max_wait_ms=7,
            fetch_min_bytes=3,
        )
        got = (c._isolation_level, c._fetch_max_wait_ms, c._fetch_min_bytes)  # noqa: SLF001
        assert got == ("read_committed", 7, 3)

    asyncio.run(build())


def test_a_missing_internal_fails_the_import_with_its_name() -> None:
    code = (
        "from faust.transport import consumer\n"
        "del consumer.Consumer._new_offset\n"
        "import fraudstream.app.faust_boundary\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "FaustIncompatible" in done.stderr
    assert "faust.transport.consumer.Consumer._new_offset" in done.stderr


def test_check_privates_names_every_missing_one() -> None:
    class Bare:
        pass

    with pytest.raises(FaustIncompatible, match=r"Bare\._gone, .*Bare\._also_gone"):
        faust_boundary.check_privates([(Bare, "_gone"), (Bare, "_also_gone")])


def test_an_untested_faust_version_is_refused_with_the_range() -> None:
    versions = {"faust-streaming": "0.16.0", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}
    with pytest.raises(
        FaustIncompatible, match=r"faust-streaming 0\.16\.0 \(tested: >=0\.15\.3,<0\.16\)"
    ):
        faust_boundary.check_versions(versions.__getitem__)
    versions["faust-streaming"] = "0.15.4"
    faust_boundary.check_versions(versions.__getitem__)


def test_the_installed_versions_are_the_tested_ones() -> None:
    faust_boundary.check_versions()


Fetched = namedtuple("Fetched", "offset key value timestamp")


def test_a_fetch_of_the_diverted_topic_becomes_records_and_the_rest_stays_with_faust() -> None:
    fetch = {
        TP("tx", 0): [Fetched(5, b"k", b"v", 1_700_000_000_123), Fetched(6, b"k", b"w", None)],
        TP("tx", 1): [Fetched(9, b"k", b"x", 1)],
        TP("other", 0): [Fetched(1, b"k", b"y", 1)],
    }
    got = faust_boundary.diverted(fetch, {TP("tx", 0), TP("other", 0)}, "tx")
    assert [(r.partition, r.offset, r.value, r.timestamp) for r in got] == [
        (0, 5, b"v", 1_700_000_000.123),
        (0, 6, b"w", None),
    ]
    assert list(fetch) == [TP("other", 0)]  # partition 1 is no longer active: dropped


def test_a_table_write_names_its_partition() -> None:
    with faust_boundary.table_partition("decisions", 3):
        event = faust.current_event()
        assert event is not None
        assert (event.message.topic, event.message.partition) == ("decisions", 3)
    assert faust.current_event() is None


def test_a_new_app_gets_the_boundary_s_consumer_producer_and_flow_control(
    settings: Settings,
) -> None:
    async def build() -> None:
        fa = create_app(settings)
        app = fa.app
        try:
            assert isinstance(app.flow_control, FlowControlEvent)
            assert type(app.flow_control).__name__ == "KeepBuffersOnResume"
            assert isinstance(app.consumer, driver.Consumer)
            assert type(app.consumer).__name__ == "Consumer"
            assert type(app.consumer).__module__ == faust_boundary.__name__
            assert type(app.producer).__module__ == faust_boundary.__name__
            with pytest.raises(RuntimeError, match="before the consumer"):
                faust_boundary.install(app, faust_boundary.Hooks())
        finally:
            faust_boundary.discard_unstarted(app)

    asyncio.run(build())


def test_resuming_flow_keeps_buffered_records(settings: Settings) -> None:
    async def build() -> None:
        fa = create_app(settings)
        try:
            flow = fa.app.flow_control
            cleared: list[bool] = []
            flow.clear = lambda: cleared.append(True)  # type: ignore[method-assign]
            flow.suspend()
            assert not flow.is_active()
            flow.resume()
            assert flow.is_active()
            assert cleared == []
        finally:
            faust_boundary.discard_unstarted(fa.app)

    asyncio.run(build())
