import os
from pathlib import Path
import pytest
from tests.stream.test_agents import rig, run, deliver, settle, label_bytes

pytestmark = pytest.mark.stream
STEP = int(os.environ.get("STEP", "9"))

def test_s(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as r:
            s = r.s
            if STEP < 1: return
            raw = label_bytes("tx-ghost", True)
            ev = await deliver(r.join, s.topic_feedback, raw, b"tx-ghost", partition=1)
            if STEP < 2: return
            await settle(r.join, [ev])
            if STEP < 3: return
            r.fa.join_handler.sweep(300)
            if STEP < 4: return
            r.fa.join_handler.sweep(0)
    run(body)

def test_threads():
    import threading, sys
    print("THREADS", [(t.name, t.daemon) for t in threading.enumerate()], file=sys.stderr)

def _test_gc():
    import gc, sys
    before = set(sys.modules)
    n = gc.collect()
    print("GC", n, sorted(set(sys.modules) - before), file=sys.stderr)

def test_gc2():
    import gc, sys, warnings
    got = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: got.append((repr(u.exc_value)[:300], repr(u.object)[:200]))
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            n = gc.collect()
    finally:
        sys.unraisablehook = old
    print("GC2", n, [str(x.message)[:300] for x in w], got, file=sys.stderr)
