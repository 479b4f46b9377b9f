"""The ``fraudstream`` command: one small function per verb, no logic of its own. Here the group
and its error handling; the verbs in their modules (``cli_kafka``, ``cli_models``, ``cli_run``,
``cli_data``, ``cli_controls``, and ``train``, ``backtest`` and ``bench``'s own ``cli``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from fraudstream import __version__
from fraudstream.errors import FraudStreamError
from fraudstream.settings import get_settings


class FriendlyGroup(click.Group):
    """Turns our errors into one clear line and exit code 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FraudStreamError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except Exception as exc:
            from confluent_kafka import KafkaException

            if not isinstance(exc, KafkaException):
                raise
            s = get_settings()
            click.secho(
                f"error: cannot talk to Kafka at FRAUD_KAFKA_BOOTSTRAP={s.kafka_bootstrap} "
                f"(security protocol {s.kafka_security_protocol}): {exc.args[0].str()}. "
                "Is the broker running (`fraudstream broker start`), and are the "
                "FRAUD_KAFKA_SECURITY_PROTOCOL / FRAUD_KAFKA_SASL_* settings right?",
                fg="red",
                err=True,
            )
            sys.exit(2)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", "-V", prog_name="fraudstream", message="%(prog)s %(version)s"
)
def main() -> None:
    """fraudstream: real-time card-fraud scoring on Kafka.

    Settings come from FRAUD_* environment variables (see README). Examples:

    \b
      fraudstream broker start
      fraudstream topics create
      fraudstream worker
      fraudstream simulate --rate 500 --duration 60
      fraudstream tail fraud.decisions
    """


def _register() -> None:
    from fraudstream.backtest.cli import backtest
    from fraudstream.bench.cli import bench
    from fraudstream.cli_controls import policy, rules
    from fraudstream.cli_data import outcomes, report, score
    from fraudstream.cli_kafka import broker, tail, topics
    from fraudstream.cli_models import models, promote, rollback, route
    from fraudstream.cli_run import demo, simulate, worker
    from fraudstream.train.cli import train

    for commands in (
        (broker, topics, tail),
        (models, route, promote, rollback),
        (worker, simulate, demo),
        (score, report, outcomes),
        (policy, rules),
        (train, backtest, bench),
    ):
        for command in commands:
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
