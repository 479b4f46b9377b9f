"""Local brokers for the tests, on ports the OS says are free.

Not ``LocalBroker.start(port=None)``: that takes 9092 whenever nothing listens there yet (what
`fraudstream broker start` and the demo want), so two brokers started at the same moment (one per
pytest-xdist worker, or a worker's session broker and another's secure broker) both chose 9092
and the second died at start-up, failing every broker test of its worker. A port from
``free_port()`` is only free when asked: another process may bind it before the JVM does (the
broker exits with "Address already in use"), so a refused bind is tried again on new ports.
"""

from __future__ import annotations

from fraudstream.errors import BrokerError
from fraudstream.kafka.broker import BrokerInfo, LocalBroker
from fraudstream.kafka.jvm import free_port

ATTEMPTS = 3


def start_on_free_ports(broker: LocalBroker, timeout: float = 90.0) -> BrokerInfo:
    """Format new storage on free ports (client, controller, SASL_SSL) and start the broker;
    again on other ports when one was taken in the meantime."""
    log = broker.home / "broker.log"
    for attempt in range(1, ATTEMPTS + 1):
        seen = log.stat().st_size if log.exists() else 0
        try:
            return broker.start(port=free_port(), timeout=timeout, fresh=True)
        except BrokerError as exc:
            # The JVM's BindException may be further up its log than the error's tail shows.
            said = str(exc) + (
                log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
            )
            if "already in use" not in said or attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")
