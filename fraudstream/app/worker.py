"""Run one stream worker: load models, read the latest routing, assemble, start Faust."""

from __future__ import annotations

import asyncio
import logging

import faust

from fraudstream.app.control import ControlFollower
from fraudstream.app.heap import Heap, Settler
from fraudstream.app.localstate import ensure_local_state_matches
from fraudstream.app.logs import enable_stack_dumps, setup_logging
from fraudstream.app.serving import ServingManager
from fraudstream.app.supervisor import Supervisor
from fraudstream.app.wiring import assemble
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.control import latest_controls, startup_routing
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.worker")

# The pause fence refuses writes once the process was frozen for this share of the consumer
# session timeout (Faust's broker_session_timeout; its BROKER_SESSION_TIMEOUT variable sets it).
PAUSE_SHARE = 0.8


def run_worker(settings: Settings) -> None:
    secrets = []
    if settings.kafka_sasl_password is not None:
        secrets.append(settings.kafka_sasl_password.get_secret_value())
    setup_logging(settings.log_level, settings.log_json, secrets)
    enable_stack_dumps()
    # Missing topics are created (existing ones are left alone): the card-state changelog in
    # particular is written by the worker's own transactions, not by Faust.
    create_topics(settings)
    # Local tables from another (or a reset) cluster would stop Faust at start: rebuild them.
    ensure_local_state_matches(settings)
    serving = ServingManager(settings.models_dir, settings.reasons_method)
    # The latest routing on the control topic wins over the start-up settings; the policy and
    # rules in force apply from the first decision.
    controls = latest_controls(settings)
    serving.start_sync(
        controls.routing or startup_routing(settings), controls.policy, controls.rules
    )
    supervisor = Supervisor(pause_limit_s=float("inf"))  # the limit is known once Faust is
    worker = assemble(settings, serving, supervisor)
    app = worker.faust.app
    supervisor.pause_limit_s = float(app.conf.broker_session_timeout) * PAUSE_SHARE
    follower = ControlFollower(settings, serving)
    # Long-lived objects out of the collector's way once ready and after each model swap.
    heap = Heap()
    heap.install()
    settler = Settler(heap, worker.ready, serving.model_ids)

    @app.timer(interval=2.0)
    async def settle_heap() -> None:
        settler.tick()

    @app.task
    async def follow_control() -> None:
        follower.start(asyncio.get_running_loop())

    faust_worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        faust_worker.execute_from_commandline()
    finally:
        follower.stop()
