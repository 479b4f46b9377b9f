"""One exception root; every error a person may see says what went wrong and what to do."""

from __future__ import annotations


class FraudStreamError(Exception):
    """Root of every error fraudstream raises on purpose."""


class ConfigError(FraudStreamError):
    """A setting is missing or wrong."""


class InvalidMessage(FraudStreamError):
    """An input message cannot be accepted.

    ``reason`` is a short stable code (it becomes the ``error.class`` header on the dead-letter
    topic and the ``reason`` label of the dead-letter metric); the message text says what is wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ScoringError(FraudStreamError):
    """A valid transaction could not be scored (for example a feature came out NaN or infinite)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ModelError(FraudStreamError):
    """A model version is missing, corrupt, or does not match the feature code; it is refused."""


class BrokerError(FraudStreamError):
    """The Kafka broker cannot be reached, started or used."""


class ReadIncomplete(BrokerError):
    """A reader that must see a topic whole (the report, promote, the routing in force) did not
    reach the end of every partition by its deadline: this, rather than part of the data."""

    def __init__(self, message: str, behind: dict[tuple[str, int], tuple[int, int]]) -> None:
        super().__init__(message)
        self.behind = behind  # (topic, partition) -> (position reached, end offset)


class TransactionAborted(BrokerError):
    """Kafka aborted a partition's open transaction (it can be retried): its events are decided
    again into the next one."""


class Fenced(BrokerError):
    """A newer owner of the partition took over its transactional id: this worker must stop
    writing for it."""


class PartitionMoved(BrokerError):
    """A partition went to another worker (a rebalance) while this worker was using it: a
    request waiting on it should be retried."""


class Fatal(FraudStreamError):
    """This worker must stop without writing more: the supervisor exits with ``exit_code``, and
    a restarted worker decides every uncommitted event again from the committed offsets."""

    exit_code = 70  # EX_SOFTWARE


class PartitionUnavailable(Fatal):
    """A partition could not be opened (fenced and restored) after repeated attempts."""


class TransactionLost(Fatal):
    """A transaction could neither be committed nor aborted (Kafka refused, or stayed away)."""


class OutputRefused(Fatal):
    """Kafka refused an output record for good: acking past it would lose it."""


class WorkerFrozen(Fatal):
    """The process was frozen (SIGSTOP, a VM pause) for most of its session timeout: its
    partitions have likely moved, and anything it wrote now would duplicate the new owner's."""

    exit_code = 75  # EX_TEMPFAIL


class FaustIncompatible(FraudStreamError):
    """The installed Faust (or aiokafka, mode) is not a version the worker was tested with, or
    lacks an internal the worker relies on."""
