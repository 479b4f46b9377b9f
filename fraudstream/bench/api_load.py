"""The API section of the benchmark: requests per second and p50 / p99 latency of ``POST /v1/score``
at a fixed concurrency against one worker.

Tool: ``wrk`` (Debian package ``wrk``) when it is on PATH, with a Lua script that gives every
request a fresh ``transaction_id`` (a repeated id would be answered 409 without scoring). Otherwise
a closed-loop Python client on aiohttp: ``concurrency`` connections, each sending its next request
as soon as the previous answer arrived — the same load model as wrk. The result says which ran.

Not wired into the harness: call :func:`measure_api` with a ready worker's base URL.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local prefix = "%(prefix)s"
request = function()
  n = n + 1
  local card = "bench-card-" .. (n %% %(cards)d)
  local body = string.format(
    '{"transaction_id":"%%s-%%d","card_id":"%%s","merchant_id":"m-%%d","amount":%%d.5,' ..
    '"currency":"EUR","event_time":"2026-05-01T12:00:00+00:00","channel":"ecom"}',
    prefix, n, card, n %% 50, n %% 900)
  return wrk.format(nil, "/v1/score", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("FSBENCH %%d %%d %%f %%f %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass(frozen=True)
class ApiLoadResult:
    tool: str  # "wrk" or "aiohttp"
    concurrency: int
    duration_s: float
    requests: int
    ok: int  # 200 answers
    non_200: int  # any other status (409, 503, ...)
    errors: int  # connection errors / timeouts
    rps: float  # 200 answers per second
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _body(prefix: str, n: int, cards: int) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": f"{prefix}-{n}",
            "card_id": f"bench-card-{n % cards}",
            "merchant_id": f"m-{n % 50}",
            "amount": (n % 900) + 0.5,
            "currency": "EUR",
            "event_time": "2026-05-01T12:00:00+00:00",
            "channel": "ecom",
        }
    )


async def _aiohttp_load(
    url: str, concurrency: int, duration_s: float, warmup_s: float, cards: int
) -> ApiLoadResult:
    import aiohttp

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    counter = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop = measure_from + duration_s

        async def one_connection() -> None:
            nonlocal counter, errors
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                counter += 1
                body = _body(prefix, counter, cards)
                t0 = time.perf_counter()
                try:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    if t0 >= measure_from:
                        errors += 1
                    continue
                if t0 >= measure_from:
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    lat = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    ok = statuses.get(200, 0)
    return ApiLoadResult(
        tool="aiohttp",
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(latencies),
        ok=ok,
        non_200=len(latencies) - ok,
        errors=errors,
        rps=ok / duration_s,
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
    )


def _wrk_load(
    wrk: str, base_url: str, concurrency: int, duration_s: float, cards: int
) -> ApiLoadResult:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "score.lua"
        script.write_text(_WRK_LUA % {"prefix": prefix, "cards": cards})
        out = subprocess.run(
            [
                wrk,
                f"-c{concurrency}",
                "-t1",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                base_url.rstrip("/") + "/v1/score",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration_s + 60,
        ).stdout
    m = re.search(r"FSBENCH (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+) (\d+)", out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests, duration_us, p50_us, p99_us, non_200, errors = m.groups()
    secs = int(duration_us) / 1e6
    ok = int(requests) - int(non_200)
    return ApiLoadResult(
        tool="wrk",
        concurrency=concurrency,
        duration_s=secs,
        requests=int(requests),
        ok=ok,
        non_200=int(non_200),
        errors=int(errors),
        rps=ok / secs,
        p50_ms=float(p50_us) / 1000,
        p99_ms=float(p99_us) / 1000,
    )


def measure_api(
    base_url: str,
    *,
    concurrency: int = 16,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    cards: int = 5000,
    tool: str = "auto",
) -> ApiLoadResult:
    """Closed-loop load on ``POST {base_url}/v1/score`` at ``concurrency`` connections for
    ``duration_s`` (after ``warmup_s`` not counted, aiohttp only). Every request is a fresh
    transaction over ``cards`` cards. ``tool``: ``"auto"`` (wrk if on PATH, else aiohttp),
    ``"wrk"`` or ``"aiohttp"``. Requests for cards of partitions this worker does not own are
    forwarded, as in production: point it at a lone worker to measure local scoring only."""
    wrk = shutil.which("wrk")
    if tool == "wrk" or (tool == "auto" and wrk):
        if not wrk:
            raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
        return _wrk_load(wrk, base_url, concurrency, duration_s, cards)
    url = base_url.rstrip("/") + "/v1/score"
    return asyncio.run(_aiohttp_load(url, concurrency, duration_s, warmup_s, cards))
