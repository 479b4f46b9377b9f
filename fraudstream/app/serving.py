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
from fraudstream.core.policy import NO_POLICY, Policy, Thresholds
from fraudstream.core.registry import ReasonsMethod, load
from fraudstream.core.rules import NO_RULES, RuleSet
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
    def __init__(self, models_dir: Path, reasons: ReasonsMethod = "path") -> None:
        self.models_dir = models_dir
        self.reasons: ReasonsMethod = reasons
        self.current: Serving | None = None
        self.requested: Routing | None = None
        self.failures: list[LoadFailure] = []
        self.loaded_at: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def start_sync(
        self, routing: Routing, policy: Policy = NO_POLICY, rules: RuleSet = NO_RULES
    ) -> Serving:
        """Load the start-up routing before the worker consumes anything; refuse to start
        without a working champion. The policy and rules in force come with it, so the first
        decision already follows them."""
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
        self.current = Serving(routing, models, policy, rules, self.reasons)
        self.requested = routing
        metrics.observe_routing(routing)
        metrics.observe_policy(policy)
        metrics.observe_rules(rules)
        return self.current

    def model_ids(self) -> frozenset[int]:
        """The identities of the models in service (a new set after each swap)."""
        return frozenset(map(id, self.current.models.values())) if self.current else frozenset()

    def apply_policy(self, policy: Policy) -> None:
        """Decide under ``policy`` from the next batch on. Call on the event loop: one reference
        assignment, no await, so it never interleaves with ``apply`` half-way."""
        assert self.current is not None
        self.current = replace(self.current, policy=policy)
        metrics.observe_policy(policy)
        log.info("policy %d applied (%s)", policy.version, policy.note or "no note")

    def apply_rules(self, rules: RuleSet) -> None:
        """Evaluate ``rules`` from the next batch on (on the event loop, like apply_policy)."""
        assert self.current is not None
        self.current = replace(self.current, rules=rules)
        metrics.observe_rules(rules)
        log.info("rules %d applied: %s", rules.version, ", ".join(rules.ids) or "none")

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
            # The policy and rules of now, not of before the loads: they may have changed since.
            now = self.current
            assert now is not None
            new = Serving(routing, models, now.policy, now.rules, now.reasons)
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
