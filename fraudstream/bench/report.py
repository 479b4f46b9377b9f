"""The benchmark's result as rich tables (terminal), Markdown and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

THROUGHPUT_COLUMNS = (
    "contender",
    "procs",
    "decided",
    "seconds",
    "tx/s",
    "ready after s",
    "peak RSS MB",
    "CPU µs/tx",
    "broker CPU µs/tx",
    "machine busy %",
    "note",
)
LATENCY_COLUMNS = (
    "contender",
    "offered/s",
    "achieved/s",
    "decided",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "seen p50 / p99 ms",
    "RSS start→end MB",
    "process CPU %",
    "main thread %",
    "companion CPU %",
    "broker CPU %",
    "machine busy %",
    "note",
)
API_COLUMNS = (
    "load tool",
    "concurrency",
    "req/s",
    "p50 ms",
    "p99 ms",
    "200s",
    "other status",
    "errors",
    "seconds",
    "worker CPU µs/req",
    "RSS MB",
    "note",
)
API_TITLE = "Scoring API, one worker, POST /v1/score at fixed concurrency (closed loop)"
RATIO_LABELS = {
    "worker_vs_passthrough": "worker ×1 / pass-through ceiling",
    "worker_vs_faust_passthrough": "worker ×1 / Faust pass-through ceiling",
    "worker_vs_handwritten": "worker ×1 / hand-written ceiling",
    "worker_vs_naive": "worker ×1 / naive baseline",
    "worker_vs_peer": "worker ×1 / peer (Quix Streams)",
    "two_workers_vs_one": "worker ×2 / worker ×1",
    "two_handwritten_vs_one": "hand-written ceiling ×2 / ×1 (what two processes reach here)",
    "two_workers_cpu_bound": "what these cores allow worker ×2 / worker ×1, about "
    "(cores ÷ (worker + broker CPU per tx) ÷ worker ×1 tx/s)",
}


def _n(x: Any, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _sampled(result: dict[str, Any]) -> bool:
    """Whether process memory and CPU were sampled (psutil, in the ``bench`` extra)."""
    return bool(result.get("machine", {}).get("psutil"))


def throughput_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    sampled = _sampled(result)
    for r in result.get("throughput", []):
        rows.append(
            [
                r["label"],
                str(r["processes"]),
                f"{r['decided']:,}/{r['transactions']:,}",
                _n(r["seconds"], 2),
                _n(r["tx_per_s"]),
                _n(r["startup_s"], 1),
                (" + ".join(_n(m, 0) for m in r["peak_rss_mb"]) or "–") if sampled else "–",
                _n(r["cpu_us_per_tx"]) if sampled else "–",
                _n(r.get("broker_cpu_us_per_tx")),
                _n(r.get("machine_busy_pct")),
                r["note"],
            ]
        )
    for key, why in result.get("skipped", {}).items():
        rows.append([key, *["–"] * (len(THROUGHPUT_COLUMNS) - 2), f"skipped: {why}"])
    return rows


def latency_rows(result: dict[str, Any]) -> list[list[str]]:
    sampled = _sampled(result)
    return [
        [
            "hand-written ceiling" if r.get("contender") == "handwritten" else "worker",
            _n(r["offered_rate"]),
            _n(r["achieved_rate"]),
            f"{r['decided']:,}/{r['sent']:,}",
            _n(r["p50_ms"], 1),
            _n(r["p95_ms"], 1),
            _n(r["p99_ms"], 1),
            _n(r["max_ms"], 1),
            f"{_n(r.get('seen_p50_ms'), 1)} / {_n(r.get('seen_p99_ms'), 1)}",
            (
                f"{_n(r['rss_start_mb'])}→{_n(r['rss_end_mb'])} ({r['rss_growth_pct']:+.1f}%)"
                if sampled
                else "–"
            ),
            _n(r.get("worker_cpu_pct")),
            _n(r.get("main_thread_cpu_pct")),
            _n(r.get("companion_cpu_pct")),
            _n(r.get("broker_cpu_pct")),
            _n(r.get("machine_busy_pct")),
            r["note"],
        ]
        for r in result.get("latency", [])
    ]


def api_rows(result: dict[str, Any]) -> list[list[str]]:
    sampled = _sampled(result)
    return [
        [
            r["tool"],
            _n(r["concurrency"]),
            _n(r["rps"]),
            _n(r["p50_ms"], 2),
            _n(r["p99_ms"], 2),
            _n(r["ok"]),
            _n(r["non_200"]),
            _n(r["errors"]),
            _n(r["seconds"], 1),
            _n(r["cpu_us_per_request"]) if sampled else "–",
            _n(r["rss_mb"]) if sampled else "–",
            r["note"],
        ]
        for r in result.get("api", [])
    ]


def _ratio_label(key: str, guarantee: str) -> str:
    """The ratio's row label; issue 19's targets are named for the guarantee the run used."""
    name, _, rate = key.partition("@")
    if name == "api_cpu_vs_stream_cpu":
        return f"API CPU per request / worker CPU per transaction, concurrency {rate[1:]}"
    if not rate:
        return RATIO_LABELS.get(key, key)
    alo = guarantee == "at_least_once"
    at = f"{float(rate):,.0f}/s offered"
    if name == "p99_vs_handwritten":
        target = " (issue 19 at-least-once target: ≤ 2)" if alo else ""
        return f"worker p99 / hand-written ceiling p99, {at}{target}"
    if name == "seen_p99_vs_handwritten":
        target = " (issue 19 at-least-once target: ≤ 2)" if alo else ""
        return f"worker seen p99 / hand-written ceiling seen p99, {at}{target}"
    if name == "seen_p99_vs_100ms_plus_2x_handwritten":
        target = "exactly-once target, this run is at least once" if alo else "exactly-once target"
        return f"worker seen p99 / (100 ms + 2 × ceiling seen p99), {at} (issue 19 {target}: ≤ 1)"
    return RATIO_LABELS.get(key, key)


def ratio_rows(result: dict[str, Any]) -> list[list[str]]:
    guarantee = str(result.get("config", {}).get("guarantee", "exactly_once"))
    return [
        [_ratio_label(k, guarantee), "–" if v is None else f"{v:.2f}×"]
        for k, v in result.get("ratios", {}).items()
    ]


def machine_rows(result: dict[str, Any]) -> list[list[str]]:
    return [[k, str(v)] for k, v in result.get("machine", {}).items()]


def stage_rows(result: dict[str, Any]) -> list[list[str]]:
    return [[k, f"{v:,.1f}"] for k, v in result.get("stages_us_per_tx", {}).items()]


def render_rich(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file or pipe: do not squeeze the table into 80

    def table(title: str, columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> None:
        t = Table(title=title, title_justify="left")
        for i, c in enumerate(columns):
            t.add_column(c, justify="left" if i == 0 or c == "note" else "right")
        for r in rows:
            t.add_row(*r)
        console.print(t)

    table("Throughput (preloaded topic)", THROUGHPUT_COLUMNS, throughput_rows(result))
    table("Ratios", ["", "ratio"], ratio_rows(result))
    if result.get("latency"):
        table("End-to-end latency, one process, fixed offered rate", LATENCY_COLUMNS,
              latency_rows(result))  # fmt: skip
    if result.get("api"):
        table(API_TITLE, API_COLUMNS, api_rows(result))
    table("Core stage costs in process (µs per transaction)", ["stage", "µs"], stage_rows(result))
    if result.get("profile_top"):
        table("Worker profile (cProfile, top by own time)", ["function", "calls", "tottime s",
              "cumtime s"], [[p["function"], _n(p["calls"]), _n(p["tottime_s"], 3),
              _n(p["cumtime_s"], 3)] for p in result["profile_top"]])  # fmt: skip
    if result.get("profile_fraudstream"):
        table("Worker profile: fraudstream functions by cumulative time", ["function", "calls",
              "tottime s", "cumtime s"], [[p["function"], _n(p["calls"]), _n(p["tottime_s"], 3),
              _n(p["cumtime_s"], 3)] for p in result["profile_fraudstream"]])  # fmt: skip
    table("Machine", ["", ""], machine_rows(result))
    for key, text in result.get("contenders", {}).items():
        console.print(f"• {key}: {text}")
    for note in result.get("notes", []):
        console.print(f"• {note}")


def _md_table(columns: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return x.replace("|", "\\|")

    head = "| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n"
    return head + "".join("| " + " | ".join(esc(c) for c in r) + " |\n" for r in rows)


def to_markdown(result: dict[str, Any]) -> str:
    parts = ["## Throughput (preloaded topic)\n", _md_table(THROUGHPUT_COLUMNS,
             throughput_rows(result)), "\n## Ratios\n", _md_table(["", "ratio"],
             ratio_rows(result))]  # fmt: skip
    if result.get("latency"):
        parts += ["\n## End-to-end latency, one process, fixed offered rate\n",
                  _md_table(LATENCY_COLUMNS, latency_rows(result))]  # fmt: skip
    if result.get("api"):
        parts += [f"\n## {API_TITLE}\n", _md_table(API_COLUMNS, api_rows(result))]
    parts += ["\n## Core stage costs in process (µs per transaction)\n",
              _md_table(["stage", "µs"], stage_rows(result))]  # fmt: skip
    if result.get("profile_top"):
        parts += ["\n## Worker profile (cProfile, top by own time)\n", _md_table(
            ["function", "calls", "tottime s", "cumtime s"],
            [[p["function"], _n(p["calls"]), _n(p["tottime_s"], 3), _n(p["cumtime_s"], 3)]
             for p in result["profile_top"]])]  # fmt: skip
    parts += ["\n## Machine\n", _md_table(["", ""], machine_rows(result)), "\n## Contenders\n"]
    parts += [f"- **{k}**: {v}\n" for k, v in result.get("contenders", {}).items()]
    parts += ["\n## Notes\n"]
    parts += [f"- {n}\n" for n in result.get("notes", [])]
    return "".join(parts)


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js = out / "bench.json"
    md = out / "bench.md"
    js.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    md.write_text("# fraudstream bench\n\n" + to_markdown(result), encoding="utf-8")
    return js, md
