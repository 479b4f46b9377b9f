"""The fault suite's worker processes (fraudstream/faults/procs.py), without a broker."""

from __future__ import annotations

import subprocess
import sys

from fraudstream.faults.procs import WorkerProc


def test_a_worker_that_crashed_natively_says_so() -> None:
    # The broker scenario's "silent" workers were librdkafka segfaults: the row must say so.
    w = WorkerProc.__new__(WorkerProc)
    w.proc = None
    assert w.state() == "not started"
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    for code, want in [
        (crash, "killed by SIGSEGV"),
        ("raise SystemExit(75)", "exited with code 75"),
        ("import time; time.sleep(30)", "running"),
    ]:
        w.proc = subprocess.Popen([sys.executable, "-c", code])
        if want != "running":
            w.proc.wait(30)
        assert w.state() == want
        w.proc.kill()
        w.proc.wait(30)
