"""A group's committed offsets read across a broker restart must not kill the process.

librdkafka's admin ``list_consumer_group_offsets`` handles a NOT_COORDINATOR answer (what a
restarted broker says while its coordinator loads) with the consumer's own OffsetFetch
handler, which asks the client's consumer group to look for the coordinator: an admin client
has none, and the process dies with SIGSEGV (librdkafka 2.15.1 and 2.16.0; the broker fault
scenario's worker crashes). ``fraudstream.kafka.groupoffsets`` reads through a consumer of the
group instead. With the admin path this test's child process died in every try (2026-11-30).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraudstream.kafka.broker import LocalBroker
from fraudstream.kafka.jvm import free_port
from tests.integration.procs import REPO

pytestmark = pytest.mark.integration

CHILD = r"""
import sys, time
from pathlib import Path
from fraudstream.errors import BrokerError
from fraudstream.kafka.groupoffsets import group_committed_offsets
from fraudstream.settings import Settings

s = Settings(_env_file=None, kafka_bootstrap=sys.argv[1], app_id="offsets-restart")
answered = failed = 0
stop = Path(sys.argv[2])
while not stop.exists():
    try:
        group_committed_offsets(s, "offsets-restart", [("t", 0), ("t", 1)], timeout=2.0)
        answered += 1
    except BrokerError:
        failed += 1
    time.sleep(0.2)
print(f"answered {answered} failed {failed}", flush=True)
"""


@pytest.mark.timeout(180)
def test_committed_offsets_read_across_a_broker_restart(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker")
    info = broker.start(port=free_port())
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, info.bootstrap, str(tmp_path / "stop")],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # librdkafka's connection-refused lines
            text=True,
        )
        time.sleep(4)
        broker.kill()
        time.sleep(8)
        broker.restart()
        time.sleep(10)  # the coordinator loads, answers NOT_COORDINATOR meanwhile
        (tmp_path / "stop").touch()
        out, _ = child.communicate(timeout=60)
    finally:
        broker.stop()
    assert child.returncode == 0, f"the reader died: exit {child.returncode} ({out!r})"
    assert "answered" in out
    answered = int(out.split()[1])
    assert answered > 10  # before the kill and again after the restart
