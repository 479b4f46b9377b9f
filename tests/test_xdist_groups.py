"""`make test`'s scheduler (tests/xdist_groups.py) on a made-up collection and two made-up
workers: the heavy tests run in one worker, one after another, each broker module in one worker,
whole; the rest is spread over both. Fails if pytest-xdist stops asking ``_split_scope``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from xdist.remote import Producer

from tests.xdist_groups import BY_MODULE, HEAVY, PathGroups, group_of

REPO = Path(__file__).resolve().parents[1]

HEAVY_IDS = [
    "tests/faults/test_restarts.py::test_sigterm_restart",
    "tests/integration/test_bench.py::test_bench_tiny_load_has_the_full_table",
    "tests/faults/test_rebalance.py::test_scale_one_two_one",
    "tests/integration/test_stall.py::test_a_stalled_scoring_path_is_reported",
    "tests/integration/test_scaling.py::test_scale_partitions_under_load_with_two_workers",
]
API_IDS = [f"tests/integration/test_api.py::test_{i}" for i in range(3)]
WHEEL_IDS = [f"tests/deploy/test_wheel.py::test_{i}" for i in range(2)]
LIGHT_IDS = [f"tests/unit/test_x.py::test_{i}[{i}]" for i in range(12)]


class Node:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.pending: list[int] = []
        self.ran: list[str] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.pending.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_heavy_paths_exist() -> None:
    for path in (*HEAVY, *BY_MODULE):
        assert (REPO / path).exists(), f"{path}: moved? tests/xdist_groups.py names it"


def test_groups_by_path() -> None:
    assert {group_of(i) for i in HEAVY_IDS} == {"heavy"}
    assert {group_of(i) for i in API_IDS} == {"tests/integration/test_api.py"}
    assert group_of("tests/integration/test_security.py::test_x[PLAIN]") == (
        "tests/integration/test_security.py"
    )
    assert {group_of(i) for i in LIGHT_IDS} == {None}


def test_a_group_runs_in_one_worker_and_the_rest_is_spread() -> None:
    collection = [*LIGHT_IDS[:6], *HEAVY_IDS, *API_IDS, *LIGHT_IDS[6:], *WHEEL_IDS]
    config = SimpleNamespace(
        getvalue=lambda name: ["2*popen"] if name == "tx" else None,
        option=SimpleNamespace(loadscopereorder=True),
    )
    sched = PathGroups(config, Producer("test", enabled=False))  # type: ignore[arg-type]
    nodes = [Node("gw0"), Node("gw1")]
    for node in nodes:
        sched.add_node(node)  # type: ignore[arg-type]
        sched.add_node_collection(node, collection)  # type: ignore[arg-type]
    sched.schedule()
    while any(n.pending for n in nodes):
        for node in nodes:
            if node.pending:
                index = node.pending.pop(0)
                node.ran.append(collection[index])
                sched.mark_test_complete(node, index)  # type: ignore[arg-type]
    assert sorted(t for n in nodes for t in n.ran) == sorted(collection)
    for group in (HEAVY_IDS, API_IDS, WHEEL_IDS):
        [runner] = [n for n in nodes if set(group) & set(n.ran)]
        assert set(group) <= set(runner.ran), group
    assert all(set(LIGHT_IDS) & set(n.ran) for n in nodes)
