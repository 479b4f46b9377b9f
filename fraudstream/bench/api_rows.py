"""API rows: one fresh worker owning every partition, ``POST /v1/score`` under a closed-loop load
at each fixed concurrency (``wrk`` when on PATH, else the aiohttp loop of ``api_load``)."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass

from fraudstream.bench.common import create
from fraudstream.bench.fleet import Fleet, mb
from fraudstream.bench.procs import Proc, Sampler, python


@dataclass
class ApiRow:
    tool: str  # the load tool that ran: "wrk" or "aiohttp"
    concurrency: int
    seconds: float = 0.0
    requests: int = 0
    ok: int = 0  # 200 answers
    non_200: int = 0
    errors: int = 0  # connection errors / timeouts
    rps: float = 0.0  # 200 answers per second
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_request: float = 0.0  # the worker's CPU time over the run / 200 answers
    rss_mb: float = 0.0  # the worker's RSS after the run
    note: str = ""


WRK_HINT = "wrk is not on PATH: using the aiohttp closed loop instead (apt-get install wrk)"


class ApiRuns(Fleet):
    """The scoring-API rows."""

    def api(self, sampler: Sampler) -> list[ApiRow]:
        """One fresh worker (own app id and topics, an empty input topic, so it owns every
        partition and no request is forwarded); ``POST /v1/score`` at each fixed concurrency."""
        from fraudstream.bench.api_load import measure_api

        cfg = self.cfg
        tool = cfg.api_tool
        if tool == "auto":
            tool = "wrk" if shutil.which("wrk") else "aiohttp"
            if tool == "aiohttp":
                self.log(f"  {WRK_HINT}")
                self.notes.append(WRK_HINT + "; the API table names the tool that ran.")
        topic = f"bench-{self.uid}.api.transactions"
        create(self.bootstrap, [topic], self.cfg.partitions)
        env, port = self._worker_env("api", topic, 0)
        companion = self._start_companion("api", topic, sampler)
        w = Proc(
            "api-worker",
            [python(), "-m", "fraudstream", "worker"],
            self.tmp,
            env=env,
            web_port=port,
        )
        base = f"http://127.0.0.1:{port}"
        out: list[ApiRow] = []
        try:
            w.start()
            sampler.add(w)
            if self._wait_ready([w], [env["FRAUD_TOPIC_DECISIONS"]]) is None:
                return [
                    ApiRow(tool, c, note="worker did not become ready") for c in cfg.api_concurrency
                ]
            if cfg.api_warmup_s > 0:
                self.log(f"  API warm-up: {cfg.api_warmup_s:g}s with {tool} …")
                with contextlib.suppress(Exception):
                    measure_api(base, concurrency=max(cfg.api_concurrency),
                                duration_s=cfg.api_warmup_s, warmup_s=0.0, tool=tool)  # fmt: skip
            for c in cfg.api_concurrency:
                self.log(f"  POST /v1/score, concurrency {c}, {cfg.api_seconds:g}s with {tool} …")
                row = ApiRow(tool, c)
                w.sample()
                cpu0 = w.cpu_s or 0.0
                try:
                    r = measure_api(base, concurrency=c, duration_s=cfg.api_seconds,
                                    warmup_s=0.0, tool=tool)  # fmt: skip
                except Exception as exc:  # a failed tool run is a row with a note, not a crash
                    row.note = f"load run failed: {exc!r}"[:300]
                    out.append(row)
                    continue
                w.sample()
                row.tool, row.seconds, row.requests = r.tool, round(r.duration_s, 2), r.requests
                row.ok, row.non_200, row.errors = r.ok, r.non_200, r.errors
                row.rps = round(r.rps, 1)
                row.p50_ms, row.p99_ms = round(r.p50_ms, 2), round(r.p99_ms, 2)
                cpu = (w.cpu_s or 0.0) - cpu0
                row.cpu_us_per_request = round(cpu / r.ok * 1e6, 1) if r.ok and cpu > 0 else 0.0
                row.rss_mb = mb(w.rss_samples[-1][1]) if w.rss_samples else 0.0
                if r.non_200 or r.errors:
                    row.note = f"{r.non_200} non-200 answers, {r.errors} connection errors"
                if not w.alive():
                    row.note = f"worker exited: {w.log_tail(3)}"[:300]
                self.log(
                    f"    {row.rps:,.0f} req/s, p50 {row.p50_ms} ms, p99 {row.p99_ms} ms "
                    f"({row.ok:,} × 200 in {row.seconds:.1f}s)"
                )
                out.append(row)
                if not w.alive():
                    break
        finally:
            w.stop()
            if companion is not None:
                companion.stop()
        return out
