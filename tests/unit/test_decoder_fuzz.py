"""Whatever arrives on a topic, the decoders either return a message or raise InvalidMessage."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.core import messages as m
from fraudstream.errors import InvalidMessage

DECODERS = (
    m.decode_transaction,
    m.decode_feedback,
    m.decode_routing,
    m.decode_decision,
    m.decode_score,
    m.decode_outcome,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

FIELDS = [
    "transaction_id",
    "card_id",
    "merchant_id",
    "amount",
    "currency",
    "event_time",
    "mcc",
    "country",
    "channel",
    "device_id",
    "is_fraud",
    "source",
    "reported_at",
    "champion",
    "challenger",
    "challenger_share",
    "shadow",
    "salt",
    "updated_at",
]
plausible = {
    "transaction_id": st.text(min_size=1, max_size=70),
    "card_id": st.text(alphabet="0123456789 -abc", min_size=1, max_size=25),
    "amount": st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.booleans(),
    "currency": st.sampled_from(["EUR", "USD", "usd", "XXX", "", "EURO"]),
    "event_time": st.sampled_from(
        ["2024-05-01T12:00:00Z", "2024-02-30T00:00:00Z", "2024-05-01", "2024-05-01T12:00:00"]
    )
    | st.datetimes().map(lambda d: d.isoformat()),
}
# Mostly-valid objects with fields swapped for arbitrary values: reaches the semantic checks.
objects = st.fixed_dictionaries(
    {},
    optional={f: plausible.get(f, json_values) for f in FIELDS},
) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=12)


def _decode_all(data: bytes) -> None:
    for decode in DECODERS:
        error: InvalidMessage | None = None
        try:
            decode(data)
        except InvalidMessage as exc:
            error = exc
        if error is not None:
            assert error.reason in m.REASONS
            assert len(error.message) < 400


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_all(data)


@settings(max_examples=300, deadline=None)
@given(objects)
def test_arbitrary_json_objects(obj: dict[str, Any]) -> None:
    _decode_all(json.dumps(obj).encode())  # stdlib: integers beyond 64 bits too


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    _decode_all(json.dumps(value).encode())
