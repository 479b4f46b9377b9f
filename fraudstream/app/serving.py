"""Which models decide, swapped live: load in the background, verify, then swap atomically.

A version that fails to load is refused (logged and counted); the version it would have replaced
keeps deciding, so no transaction goes undecided.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fraudstream.app import metrics
from fraudstream.core.engine import ServedModel, Serving
from fraudstream.core.messages import Routing
from fraudstream.core.policy import Thresholds
from fraudstream.core.registry import load
from fraudstream.errors import ModelError

log = logging.getLogger("fraudstream.serving")


@dataclass(frozen=True)
class LoadFailure:
    version: str
    error: str
    at: float


def load_served(models_dir: Path, version: str) -> ServedModel:
    model = load(models_dir, version)
    meta = model.meta
    return ServedModel(
        version, model, Thresholds(review=meta.review_threshold, decline=meta.decline_threshold)
    )


class ServingManager:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.current: Serving | None = None
        self.requested: Routing | None = None
        self.failures: list[LoadFailure] = []
        self.loaded_at: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def start_sync(self, routing: Routing) -> Serving:
        """Load the start-up routing before the worker consumes anything; refuse to start
        without a working champion."""
        models: dict[str, ServedModel] = {}
        for version in filter(None, (routing.champion, routing.challenger)):
            try:
                models[version] = load_served(self.models_dir, version)
                self.loaded_at[version] = time.time()
                metrics.observe_model_loaded(
                    models[version], "champion" if version == routing.champion else "challenger"
                )
            except ModelError as exc:
                metrics.MODEL_LOAD_FAILURES.labels(version=version).inc()
                if version == routing.champion:
                    raise
                log.error("challenger %s refused, serving the champion only: %s", version, exc)
                routing = replace(routing, challenger=None, challenger_share=0.0, shadow=False)
        self.current = Serving(routing, models)
        self.requested = routing
        metrics.observe_routing(routing)
        return self.current

    async def apply(self, requested: Routing) -> Serving:
        """Move to ``requested``; versions that fail to load keep their predecessor."""
        async with self._lock:
            self.requested = requested
            current = self.current
            assert current is not None
            models = dict(current.models)
            routing = requested
            for role, version in (
                ("champion", requested.champion),
                ("challenger", requested.challenger),
            ):
                if version is None or version in models:
                    continue
                try:
                    served = await asyncio.to_thread(load_served, self.models_dir, version)
                except ModelError as exc:
                    self.failures.append(LoadFailure(version, str(exc), time.time()))
                    metrics.MODEL_LOAD_FAILURES.labels(version=version).inc()
                    log.error(
                        "model %s refused; %s keeps deciding: %s",
                        version,
                        getattr(current.routing, role) or current.routing.champion,
                        exc,
                    )
                    if role == "champion":
                        routing = replace(routing, champion=current.routing.champion)
                    else:
                        routing = replace(
                            routing,
                            challenger=current.routing.challenger,
                            challenger_share=current.routing.challenger_share
                            if current.routing.challenger
                            else 0.0,
                        )
                    continue
                models[version] = served
                self.loaded_at[version] = time.time()
            if routing.challenger == routing.champion:
                routing = replace(routing, challenger=None, challenger_share=0.0)
            keep = {routing.champion, routing.challenger}
            models = {v: m for v, m in models.items() if v in keep}
            new = Serving(routing, models)
            self.current = new  # one reference assignment: the agents see old or new, never half
            for version, served in models.items():
                metrics.observe_model_loaded(
                    served, "champion" if version == routing.champion else "challenger"
                )
            metrics.forget_models_except(set(models))
            metrics.observe_routing(routing)
            log.info(
                "routing applied: champion=%s challenger=%s share=%.3f shadow=%s",
                routing.champion,
                routing.challenger,
                routing.challenger_share,
                routing.shadow,
            )
            return new
