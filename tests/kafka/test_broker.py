"""The launcher's pure helpers (no broker started)."""

from __future__ import annotations

import uuid

import pytest

from fraudstream.kafka import broker


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes to '-' as the first base64url character; the storage tool would read
    # "-t -abc..." as a missing value (a CI run failed exactly so).
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(int=7)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    cid = broker.new_cluster_id()
    assert not cid.startswith("-")
    assert cid == "AAAAAAAAAAAAAAAAAAAABw"
