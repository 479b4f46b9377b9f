"""The fault suite's library: the verifier, the scenarios (``restarts``, ``rebalance``,
``bad_input``, on the worker processes of ``procs`` and the load and rows of ``load``), and here
the results table.

Every scenario run by ``tests/faults`` records its row in a JSON file (``$FRAUD_FAULTS_RESULTS``,
default ``.fraudstream/faults/results.json``). A scenario run several times keeps its *worst*
run (``worse``: most lost + duplicated + phantom + final lag, then the longest recovery) and
counts its runs, so the table never shows a lucky run. ``python -m fraudstream.faults --reset``
starts afresh; ``--write-docs`` renders the rows into docs/faults.md, between the
``<!-- faults:table -->`` markers. ``make faults`` does all three.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "faults.md"
BEGIN, END = "<!-- faults:table:begin -->", "<!-- faults:table:end -->"

# Table order; scenarios not listed here come after, alphabetically.
ORDER = [
    "SIGTERM + restart",
    "SIGKILL x1",
    "SIGKILL x3",
    "SIGTERM + restart (at_least_once)",
    "SIGKILL x1 (at_least_once)",
    "SIGKILL x3 (at_least_once)",
    "scale 1→2→1 (at_least_once)",
    "scale 1→2→1",
    "broker SIGKILL + restart",
    "SIGSTOP past session timeout",
    "bad-input corpus under load",
    "scoring-time failure (non-finite feature)",
    "replay older than the dedup window",
]

# Where each scenario runs: CI (`make test`) or `make faults` only.
CI = {
    "SIGTERM + restart",
    "SIGKILL x1",
    "SIGTERM + restart (at_least_once)",
    "SIGKILL x1 (at_least_once)",
    "scale 1→2→1",
    "bad-input corpus under load",
    "scoring-time failure (non-finite feature)",
    "replay older than the dedup window",
}

HOT_SWAP_ROW = (
    "| model hot swap to a bit-flipped / truncated / sha-mismatched / pickled file | | "
    "see `tests/integration/test_hot_swap.py` (CI): refused, the old version keeps deciding, "
    "no gap | | | | | | | CI |"
)


def results_path() -> Path:
    return Path(os.environ.get("FRAUD_FAULTS_RESULTS") or REPO / ".fraudstream/faults/results.json")


def load_results(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = path or results_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _badness(row: Mapping[str, Any]) -> tuple[float, ...]:
    wrong = sum(int(row.get(k) or 0) for k in ("lost", "duplicated", "phantom", "final_lag"))
    return (wrong, float(row.get("recovery_s") or 0.0), float(row.get("converge_s") or 0.0))


def worse(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
    """The worse of two runs of one scenario."""
    return b if _badness(b) > _badness(a) else a


def record(row: Mapping[str, Any], path: Path | None = None) -> None:
    """Add ``row`` (a run of its ``scenario``) to the results file: the scenario keeps its worst
    run so far, and how many runs there were."""
    path = path or results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several test processes (pytest-xdist) may record at once: one at a time reads, adds and
    # replaces the file, each through a temporary file of its own.
    with _locked(path.with_name(path.name + ".lock")):
        data = load_results(path)
        name = str(row["scenario"])
        earlier = data.get(name)
        runs = 1 + int(earlier.get("runs") or 1) if earlier else 1
        kept = dict(worse(earlier, row) if earlier else row)
        kept["runs"] = runs
        # Every run's outcome in brief: lost/duplicated/phantom/final lag and recovery (s).
        lost, dup = row.get("lost"), row.get("duplicated")
        brief = f"{lost}/{dup}/{row.get('phantom')}/{row.get('final_lag')}"
        kept["each_run"] = [
            *(earlier or {}).get("each_run", []),
            f"{brief} {row.get('recovery_s')}s",
        ]
        data[name] = kept
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
        tmp.replace(path)


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock`` (created if missing) while the block runs."""
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reset(path: Path | None = None) -> None:
    """Forget every recorded run (``make faults`` starts with this)."""
    (path or results_path()).unlink(missing_ok=True)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def render_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    names = sorted(rows, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    lines = [
        "| scenario | runs | events | lost | duplicated | phantom | dead-lettered | final lag | "
        "recovery (s) | converge (s) | runs in |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in names:
        r = rows[name]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    _cell(r.get("runs") or 1),
                    _cell(r.get("events")),
                    _cell(r.get("lost")),
                    _cell(r.get("duplicated")),
                    _cell(r.get("phantom")),
                    _cell(r.get("dead_lettered")),
                    _cell(r.get("final_lag")),
                    _cell(r.get("recovery_s")),
                    _cell(r.get("converge_s")),
                    "CI" if name in CI else "`make faults`",
                ]
            )
            + " |"
        )
    lines.append(HOT_SWAP_ROW)
    lines.append("")
    lines.append(
        "Each row is the scenario's worst run of its `runs` (most lost + duplicated + phantom + "
        "final lag, then the longest recovery). Faults injected and notes of that run:"
    )
    lines.append("")
    for name in names:
        r = rows[name]
        faults = "; ".join(r.get("faults") or [])
        note = r.get("notes") or ""
        when = r.get("measured_at") or "?"
        lines.append(f"- **{name}** ({when} UTC): {faults}. {note}".rstrip())
        if len(r.get("each_run") or []) > 1:
            lines.append(
                "  Every run (lost/duplicated/phantom/final lag, recovery): "
                + "; ".join(r["each_run"])
            )
    return "\n".join(lines)


def write_docs(rows: Mapping[str, Mapping[str, Any]] | None = None, doc: Path = DOC) -> Path:
    rows = load_results() if rows is None else rows
    table = render_table(rows)
    text = doc.read_text() if doc.exists() else ""
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    doc.write_text(text)
    return doc
