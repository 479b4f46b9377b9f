"""HTTP endpoints on the worker's Faust web server (loopback unless FRAUD_WEB_HOST says otherwise):
/metrics (Prometheus), /healthz, /readyz, /v1/models; the scoring API (POST /v1/score,
/openapi.json) is ``fraudstream.app.api``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraudstream.app import metrics
from fraudstream.app.serving import ServingManager
from fraudstream.settings import Settings


def models_view(manager: ServingManager) -> dict[str, Any]:
    serving = manager.current
    if serving is None:
        return {"loaded": [], "routing": None}
    r = serving.routing
    return {
        "routing": {
            "champion": r.champion,
            "challenger": r.challenger,
            "challenger_share": r.challenger_share,
            "shadow": r.shadow,
            "salt": r.salt,
            "updated_at": r.updated_at,
        },
        "loaded": [
            {
                "version": v,
                "role": "champion" if v == r.champion else "challenger",
                "sha256": m.model.meta.sha256,
                "thresholds": {"review": m.thresholds.review, "decline": m.thresholds.decline},
                "loaded_at": manager.loaded_at.get(v),
            }
            for v, m in serving.models.items()
        ],
        "refused": [
            {"version": f.version, "error": f.error, "at": f.at} for f in manager.failures[-10:]
        ],
    }


def readiness(
    app: Any, serving: ServingManager, partitions_open: Callable[[], bool]
) -> dict[str, bool]:
    """``partitions_open``: every assigned scoring partition has its transaction open (earlier
    owners fenced, card records restored); until then its first transactions would wait."""
    models_ok = serving.current is not None
    assigned = bool(app.consumer.assignment() if app.consumer else set())
    opened = partitions_open()
    return {
        "ready": models_ok and assigned and opened and not app.rebalancing,
        "models_loaded": models_ok,
        "partitions_assigned": assigned,
        "partitions_open": opened,
    }


def install(
    app: Any,
    settings: Settings,
    serving: ServingManager,
    partitions_open: Callable[[], bool],
) -> None:

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        body = readiness(app, serving, partitions_open)
        return web.json(body, status=200 if body["ready"] else 503)

    # The same answer as a gauge, read at each scrape: alerts see a worker that is up but not
    # ready (no partitions, models not loaded, a rebalance that does not end).
    def ready_now() -> float:
        try:
            return float(readiness(app, serving, partitions_open)["ready"])
        except Exception:  # noqa: BLE001 - a scrape must never fail over it; not ready
            return 0.0

    metrics.READY.set_function(ready_now)

    @app.page("/v1/models")
    async def models(web: Any, request: Any) -> Any:
        return web.json(models_view(serving))
