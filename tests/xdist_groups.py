"""How `make test` shares the suite among its pytest-xdist worker processes (``-n 2 --dist
loadgroup``; tests/conftest.py installs this scheduler for ``loadgroup``).

A group's tests run in one worker process, one after another; every other test goes to whichever
worker is free. Groups:

- ``heavy``: the tests that time the machine or load it on purpose (fault scenarios timed from a
  kill to the first decision, the bench's table, the stall detector's window, partitions scaled
  under load) never run beside each other;
- every other module of ``tests/integration`` and ``tests/deploy`` is a group of its own, so that
  its module-scoped fixtures (a cluster of workers, a secure broker, a built wheel) are set up
  once, not once per worker process, and its tests keep their order.

By path in the scheduler, not by ``xdist_group`` marks added at collection: pytest-xdist 3.8
carries a mark's group to the scheduler by rewriting the test's node id, which pytest 9.2 no
longer takes (pytest-xdist issue #1386), so the marks were silently ignored and the heavy tests
spread over every worker. An ``xdist_group`` mark, where xdist does pass it, still wins.
"""

from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling

HEAVY = (
    "tests/faults/",
    "tests/integration/test_bench.py",
    "tests/integration/test_scaling.py",
    "tests/integration/test_stall.py",
)
BY_MODULE = ("tests/integration/", "tests/deploy/")


def group_of(nodeid: str) -> str | None:
    """The group of the test ``nodeid`` (relative to the repository), or None: on its own."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(HEAVY):
        return "heavy"
    if path.startswith(BY_MODULE):
        return path
    return None


class PathGroups(LoadGroupScheduling):
    """``--dist loadgroup``'s scheduler with the groups above."""

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        if scope != nodeid:  # an xdist_group mark's group, passed in the node id
            return scope
        return group_of(nodeid) or nodeid
