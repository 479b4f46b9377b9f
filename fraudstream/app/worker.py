"""Run one stream worker: load models, read the latest routing, start Faust."""

from __future__ import annotations

import asyncio
import logging

import faust

from fraudstream.app.app import create_app
from fraudstream.app.control import ControlFollower
from fraudstream.app.localstate import ensure_local_state_matches
from fraudstream.app.logs import setup_logging
from fraudstream.app.serving import ServingManager
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.control import latest_routing, startup_routing
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.worker")


def run_worker(settings: Settings) -> None:
    secrets = []
    if settings.kafka_sasl_password is not None:
        secrets.append(settings.kafka_sasl_password.get_secret_value())
    setup_logging(settings.log_level, settings.log_json, secrets)
    # Missing topics are created (existing ones are left alone): the card-state changelog in
    # particular is written by the worker's own transactions, not by Faust.
    create_topics(settings)
    # Local tables from another (or a reset) cluster would stop Faust at start: rebuild them.
    ensure_local_state_matches(settings)
    serving = ServingManager(settings.models_dir)
    # The latest routing on the control topic wins over the start-up settings.
    routing = latest_routing(settings) or startup_routing(settings)
    serving.start_sync(routing)
    fa = create_app(settings, serving)
    follower = ControlFollower(settings, serving)

    @fa.app.task
    async def follow_control() -> None:
        follower.start(asyncio.get_running_loop())

    worker = faust.Worker(
        fa.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()
    finally:
        follower.stop()
