"""The one record type: a Kafka record as the worker reads it, and the contract's dead-letter
headers for it. Plain data; whoever fetched it (Faust's consumer, a test, an API request standing
in for one) builds a ``Record``."""

from __future__ import annotations

from dataclasses import dataclass

from fraudstream.core.redact import redact

#: The offset of a record that did not come from the log (an API request decided like one).
NO_OFFSET = -1


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One record of one partition. ``timestamp`` is the broker's, in POSIX seconds.

    Compared by identity: two deliveries of one offset are two records (the scoring path drops
    the second by its offset, not by equality)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None

    @property
    def from_log(self) -> bool:
        return self.offset != NO_OFFSET


def dead_letter_headers(record: Record, reason: str, text: str) -> list[tuple[str, bytes]]:
    """The contract's dead-letter headers; the record's key and value go to the dead-letter
    topic untouched. ``text`` is scrubbed of card numbers and cut to 1,000 characters."""
    return [
        ("error.class", reason.encode()),
        ("error.message", redact(text)[:1000].encode()),
        ("origin.topic", record.topic.encode()),
        ("origin.partition", str(record.partition).encode()),
        ("origin.offset", str(record.offset).encode()),
    ]
