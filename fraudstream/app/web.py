"""HTTP endpoints on the worker's Faust web server (loopback unless FRAUD_WEB_HOST says otherwise):
/metrics (Prometheus), /healthz, /readyz, /v1/models; the scoring API (POST /v1/score,
/openapi.json) is in ``fraudstream.app.api``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraudstream.app import api, metrics
from fraudstream.app.app import FraudApp


def models_view(fa: FraudApp) -> dict[str, Any]:
    serving = fa.serving.current
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
                "loaded_at": fa.serving.loaded_at.get(v),
            }
            for v, m in serving.models.items()
        ],
        "refused": [
            {"version": f.version, "error": f.error, "at": f.at} for f in fa.serving.failures[-10:]
        ],
    }


def readiness(fa: FraudApp) -> dict[str, bool]:
    app = fa.app
    models_ok = fa.serving.current is not None
    assignment = app.consumer.assignment() if app.consumer else set()
    assigned = bool(assignment)
    # A scoring partition can decide once its transaction is open (earlier owners fenced,
    # card records restored); until then its first transactions would wait.
    handler = fa.tx_handler
    opened = handler is None or all(
        handler.store.owns(tp.partition)
        for tp in assignment
        if tp.topic == fa.settings.topic_transactions
    )
    return {
        "ready": models_ok and assigned and opened and not app.rebalancing,
        "models_loaded": models_ok,
        "partitions_assigned": assigned,
        "partitions_open": opened,
    }


def install(fa: FraudApp) -> None:
    app = fa.app

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        body = readiness(fa)
        return web.json(body, status=200 if body["ready"] else 503)

    # The same answer as a gauge, read at each scrape: alerts see a worker that is up but not
    # ready (no partitions, models not loaded, a rebalance that does not end).
    def ready_now() -> float:
        try:
            return float(readiness(fa)["ready"])
        except Exception:  # noqa: BLE001 - a scrape must never fail over it; not ready
            return 0.0

    metrics.READY.set_function(ready_now)

    @app.page("/v1/models")
    async def models(web: Any, request: Any) -> Any:
        return web.json(models_view(fa))

    api.install(fa)
