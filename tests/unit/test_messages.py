"""Decoders, reason codes, encoders, and the schema files as the contract of what we write."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jsonschema
import orjson
import pytest

from fraudstream.core import messages as m
from fraudstream.core.messages import (
    REASONS,
    Decision,
    Feedback,
    Outcome,
    Reason,
    ReasonCode,
    Routing,
    Score,
    Transaction,
)
from fraudstream.errors import InvalidMessage

PAN = "4111111111111111"

MINIMAL: dict[str, Any] = {
    "transaction_id": "tx-1",
    "card_id": "card-1",
    "merchant_id": "m-1",
    "amount": 12.5,
    "currency": "EUR",
    "event_time": "2024-05-01T12:34:56Z",
}
FULL: dict[str, Any] = {
    **MINIMAL,
    "event_time": "2024-05-01T12:34:56.250+02:00",
    "mcc": 5411,
    "country": "DE",
    "channel": "pos",
    "device_id": "dev-1",
}


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


def with_(**changes: Any) -> bytes:
    return raw({**MINIMAL, **changes})


def without(field: str) -> bytes:
    return raw({k: v for k, v in MINIMAL.items() if k != field})


def reason_of(data: bytes | None, decoder: Any = m.decode_transaction) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        decoder(data)
    assert info.value.reason in REASONS
    return info.value


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = m.load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# ---------------------------------------------------------------------------- valid input


def test_minimal_transaction() -> None:
    t = m.decode_transaction(raw(MINIMAL))
    assert t == Transaction(
        "tx-1", "card-1", "m-1", 12.5, "EUR", "2024-05-01T12:34:56Z", 1714566896.0, 0
    )


def test_full_transaction() -> None:
    t = m.decode_transaction(raw(FULL))
    assert t.ts == pytest.approx(1714566896.25 - 7200)
    assert t.utc_offset_s == 7200
    assert (t.mcc, t.country, t.channel, t.device_id) == (5411, "DE", "pos", "dev-1")


def test_negative_offset_and_lowercase_rfc3339() -> None:
    t = m.decode_transaction(with_(event_time="2024-05-01t12:00:00-05:30"))
    assert t.utc_offset_s == -(5 * 3600 + 1800)
    assert t.event_time == "2024-05-01t12:00:00-05:30"  # kept as received


def test_unknown_fields_are_ignored() -> None:
    t = m.decode_transaction(with_(future_field={"x": [1, 2]}, schema_version=7))
    assert t.transaction_id == "tx-1"


def test_null_optionals_are_absent() -> None:
    t = m.decode_transaction(with_(mcc=None, country=None, channel=None, device_id=None))
    assert (t.mcc, t.country, t.channel, t.device_id) == (None, None, None, None)


def test_integer_amount_and_float_mcc() -> None:
    t = m.decode_transaction(with_(amount=0, mcc=5411.0))
    assert t.amount == 0.0
    assert isinstance(t.amount, float)
    assert t.mcc == 5411
    assert isinstance(t.mcc, int)


def test_reasons_are_documented() -> None:
    assert set(REASONS) == {
        "empty",
        "too_large",
        "not_utf8",
        "not_json",
        "not_object",
        "schema",
        "bad_currency",
        "bad_timestamp",
        "card_number",
        "bad_routing",
    }


# ---------------------------------------------------------------------------- each reason code


@pytest.mark.parametrize("data", [None, b""])
def test_empty(data: bytes | None) -> None:
    assert reason_of(data).reason == "empty"


def test_too_large() -> None:
    big = with_(device_id="x" * 2000)
    assert reason_of(big, lambda b: m.decode_transaction(b, max_bytes=1000)).reason == "too_large"


def test_900kb_value_is_refused_without_echo() -> None:
    err = reason_of(with_(device_id="y" * 900_000))
    assert err.reason in ("too_large", "schema")
    assert "yyyy" not in err.message
    assert len(str(err)) < 200


def test_not_utf8() -> None:
    err = reason_of(b'{"transaction_id": "\xff\xfe"}')
    assert err.reason == "not_utf8"


@pytest.mark.parametrize(
    "data", [b"{", b"nope", b'{"amount": NaN}', b'{"a": 1e400}', b"\xef\xbb\xbf{}"]
)
def test_not_json(data: bytes) -> None:
    assert reason_of(data).reason == "not_json"


@pytest.mark.parametrize("data", [b"[]", b"1", b'"tx"', b"null", b"true"])
def test_not_object(data: bytes) -> None:
    assert reason_of(data).reason == "not_object"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (without("amount"), "missing required field(s): amount"),
        (with_(amount=-5), "amount: -5 is less than the minimum of 0"),
        (with_(amount=2e9), "amount: 2000000000.0 is greater than the maximum of 1000000000"),
        (with_(amount=True), "amount: expected number, got boolean"),
        (with_(amount="12.5"), "amount: expected number, got string"),
        (with_(transaction_id=""), "transaction_id: must not be empty"),
        (
            with_(transaction_id="t" * 65),
            "transaction_id: is 65 characters long; the maximum is 64",
        ),
        (with_(merchant_id=7), "merchant_id: expected string, got integer"),
        (with_(mcc=10000), "mcc: 10000 is greater than the maximum of 9999"),
        (with_(mcc=5411.5), "mcc: expected integer or null, got number"),
        (with_(mcc=False), "mcc: expected integer or null, got boolean"),
        (with_(country="deu"), "country: 'deu' does not match ^[A-Z]{2}$"),
        (with_(channel="web"), "channel: 'web' is not one of pos, ecom, atm, moto, null"),
        (with_(device_id="d" * 129), "device_id: is 129 characters long; the maximum is 128"),
    ],
)
def test_schema(data: bytes, expected: str) -> None:
    err = reason_of(data)
    assert err.reason == "schema"
    assert err.message == expected


def test_schema_lists_every_missing_field() -> None:
    err = reason_of(raw({"transaction_id": "t"}))
    assert err.message == (
        "missing required field(s): card_id, merchant_id, amount, currency, event_time"
    )


@pytest.mark.parametrize("currency", ["usd", "EURO", "XXX", "ABC", 978, ""])
def test_bad_currency(currency: Any) -> None:
    err = reason_of(with_(currency=currency))
    assert err.reason == "bad_currency"
    assert err.message.startswith("currency: ")


@pytest.mark.parametrize(
    "event_time",
    [
        "2024-05-01T12:34:56",  # no offset
        "2024-05-01 12:34:56Z",  # not RFC 3339
        "2024-05-01",
        "yesterday",
        1714566896,
        "2023-02-29T00:00:00Z",  # not a leap year
        "2024-05-01T23:59:60Z",  # leap second: Python cannot represent it
    ],
)
def test_bad_timestamp(event_time: Any) -> None:
    err = reason_of(with_(event_time=event_time))
    assert err.reason == "bad_timestamp"
    assert err.message.startswith("event_time: ")


@pytest.mark.parametrize(
    "card_id", [PAN, "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005", PAN + "\n"]
)
def test_card_number_is_refused_and_never_echoed(card_id: str) -> None:
    err = reason_of(with_(card_id=card_id))
    assert err.reason == "card_number"
    digits = card_id.replace(" ", "").replace("-", "").strip()
    for text in (err.message, str(err), repr(err)):
        assert digits[-8:] not in text.replace(" ", "").replace("-", "")
    assert err.__context__ is None
    assert err.__cause__ is None


@pytest.mark.parametrize("card_id", ["12345678901", "tok_4111111111111111", "12345678901234567890"])
def test_tokens_that_are_not_pans_pass(card_id: str) -> None:
    assert m.decode_transaction(with_(card_id=card_id)).card_id == card_id


def test_pan_in_another_field_is_masked_in_the_message() -> None:
    err = reason_of(with_(country=PAN))
    assert err.reason == "schema"
    assert PAN not in err.message
    assert "<digits>" in err.message


def test_echoed_values_are_truncated() -> None:
    err = reason_of(with_(country="Z" * 500))
    assert err.reason == "schema"
    assert "Z" * 41 not in err.message
    assert "…" in err.message


# ---------------------------------------------------------------------------- feedback, routing


def test_feedback_roundtrip_and_real_bool() -> None:
    f = Feedback("tx-1", True, "chargeback", "2024-05-03T08:00:00+00:00")
    assert m.decode_feedback(m.encode_feedback(f)) == f
    body = {"transaction_id": "tx-1", "source": "analyst", "reported_at": "2024-05-03T08:00:00Z"}
    for bad in (1, "true", None):
        err = reason_of(raw({**body, "is_fraud": bad}), m.decode_feedback)
        assert err.reason == "schema"
        assert err.message.startswith("is_fraud: expected boolean")
    err = reason_of(
        raw({**body, "is_fraud": False, "reported_at": "2024-13-01T00:00:00Z"}), m.decode_feedback
    )
    assert err.reason == "bad_timestamp"


def test_routing_defaults_and_roundtrip() -> None:
    assert m.decode_routing(b'{"champion": "v1"}') == Routing("v1")
    r = Routing("v1", "v2", 0.25, True, "salt-1", "2024-05-01T00:00:00.000+00:00")
    assert m.decode_routing(m.encode_routing(r)) == r


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"champion": "v1", "challenger_share": 0.5}, "bad_routing"),
        ({"champion": "v1", "challenger": "v1"}, "bad_routing"),
        ({"champion": "v1", "challenger": "v2", "challenger_share": 1.5}, "schema"),
        ({"champion": "v1", "shadow": "yes"}, "schema"),
        ({"champion": ""}, "schema"),
        ({"challenger": "v2"}, "schema"),
        ({"champion": "v1", "updated_at": "soon"}, "schema"),
    ],
)
def test_bad_routing(body: dict[str, Any], reason: str) -> None:
    assert reason_of(raw(body), m.decode_routing).reason == reason


# ---------------------------------------------------------------------------- encoders


DECISION = Decision(
    transaction_id="tx-1",
    card_id="card-1",
    decision="decline",
    score=0.93,
    model_version="v2",
    variant="challenger",
    reasons=(Reason("amount_z", 4.2, 1.5), Reason("new_device", math.nan, 0.25)),
    decided_at="2024-05-01T12:34:56.300+00:00",
    amount=12.5,
    currency="EUR",
    policy_version=3,
    rules_version=2,
    reason_codes=(
        ReasonCode("RULE_BLOCK_CARD", "card is on block list 'stolen'", "rule", "stolen"),
        ReasonCode("AMOUNT", "amount is 12.50 EUR", "model", "amount_z"),
    ),
)
SCORE = Score("tx-1", "v1", "shadow", 0.41, "2024-05-01T12:34:56.300+00:00", "review")
OUTCOME = Outcome(
    "tx-1",
    "v2",
    "challenger",
    "decline",
    0.93,
    False,
    "FP",
    12.5,
    "EUR",
    "2024-05-04T00:00:00.000+00:00",
)


def test_transaction_roundtrip_keeps_event_time_and_omits_none() -> None:
    for body in (MINIMAL, FULL):
        t = m.decode_transaction(raw(body))
        encoded = m.encode_transaction(t)
        assert m.decode_transaction(encoded) == t
        obj = orjson.loads(encoded)
        assert obj["event_time"] == body["event_time"]
        assert set(obj) == {*body, "schema_version"}


def test_decision_roundtrip_nan_value_becomes_null() -> None:
    encoded = m.encode_decision(DECISION)
    assert orjson.loads(encoded)["reasons"][1]["value"] is None
    back = m.decode_decision(encoded)
    assert math.isnan(back.reasons[1].value)
    assert back.reasons[0] == DECISION.reasons[0]
    assert m.encode_decision(back) == encoded
    assert back == dataclasses.replace(DECISION, reasons=back.reasons)


def test_a_decision_written_before_policies_and_reason_codes_reads_with_defaults() -> None:
    obj = orjson.loads(m.encode_decision(DECISION))
    for name in ("policy_version", "rules_version", "reason_codes"):
        del obj[name]
    back = m.decode_decision(orjson.dumps(obj))
    assert (back.policy_version, back.rules_version, back.reason_codes) == (0, 0, ())


def test_score_and_outcome_roundtrip() -> None:
    assert m.decode_score(m.encode_score(SCORE)) == SCORE
    assert m.decode_outcome(m.encode_outcome(OUTCOME)) == OUTCOME
    full = dataclasses.replace(OUTCOME, card_id="card-1", decided_at=DECISION.decided_at)
    assert m.decode_outcome(m.encode_outcome(full)) == full
    # Records written before card_id / decided_at existed lack them: "" after decoding.
    assert "card_id" not in orjson.loads(m.encode_outcome(OUTCOME))


def test_encoders_accept_numpy_scalars() -> None:
    import numpy as np

    s = Score("tx-1", "v1", "champion", np.float32(0.5), "2024-05-01T00:00:00Z")  # type: ignore[arg-type]
    assert orjson.loads(m.encode_score(s))["score"] == 0.5


def test_output_decoders_tolerate_new_fields_but_not_new_versions() -> None:
    obj = orjson.loads(m.encode_score(SCORE))
    assert m.decode_score(raw({**obj, "added_later": 1})) == SCORE
    err = reason_of(raw({**obj, "schema_version": 2}), m.decode_score)
    assert err.reason == "schema"


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("transaction", m.encode_transaction(m.decode_transaction(raw(MINIMAL)))),
        ("transaction", m.encode_transaction(m.decode_transaction(raw(FULL)))),
        ("decision", m.encode_decision(DECISION)),
        (
            "decision",
            m.encode_decision(
                Decision(
                    "tx-2",
                    "c",
                    "approve",
                    0.01,
                    "v1",
                    "champion",
                    (),
                    "2024-05-01T00:00:00Z",
                    0.0,
                    "USD",
                )
            ),
        ),
        ("score", m.encode_score(SCORE)),
        ("outcome", m.encode_outcome(OUTCOME)),
        (
            "outcome",
            m.encode_outcome(
                dataclasses.replace(OUTCOME, card_id="card-1", decided_at=DECISION.decided_at)
            ),
        ),
        ("feedback", m.encode_feedback(Feedback("tx-1", False, "analyst", "2024-05-01T00:00:00Z"))),
        ("routing", m.encode_routing(Routing("v1"))),
        ("routing", m.encode_routing(Routing("v1", "v2", 0.1, True, "s", "2024-05-01T00:00:00Z"))),
    ],
)
def test_every_encoded_message_validates_against_its_schema_file(name: str, encoded: bytes) -> None:
    validator(name).validate(json.loads(encoded))


@pytest.mark.parametrize("name", m.SCHEMA_NAMES)
def test_schema_files_are_valid_draft07_with_id(name: str) -> None:
    schema = m.load_schema(name)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"].startswith("urn:fraudstream:schema:")
    assert schema["title"]
    validator(name)  # check_schema


@pytest.mark.parametrize("name", ["decision", "score", "outcome"])
def test_outputs_require_schema_version_1(name: str) -> None:
    schema = m.load_schema(name)
    assert "schema_version" in schema["required"]
    assert schema["properties"]["schema_version"]["const"] == 1


def test_inputs_accept_extra_fields_per_schema_file() -> None:
    for name in ("transaction", "feedback", "routing"):
        assert m.load_schema(name)["additionalProperties"] is True


def test_currency_list_is_iso_like_and_excludes_test_codes() -> None:
    codes = m.load_schema("transaction")["properties"]["currency"]["enum"]
    assert len(codes) > 150
    assert all(len(c) == 3 and c.isupper() for c in codes)
    assert {"USD", "EUR", "GBP", "JPY", "CHF", "SEK"} <= set(codes)
    assert not {"XXX", "XTS", "HRK"} & set(codes)


def test_schema_path_refuses_unknown_names() -> None:
    assert m.schema_path("score").name == "score.json"
    with pytest.raises(ValueError, match="no schema named"):
        m.schema_path("../pyproject")


def test_times() -> None:
    assert m.iso_from_ts(0) == "1970-01-01T00:00:00.000+00:00"
    now = m.utc_now_iso()
    assert now.endswith("+00:00")
    assert len(now) == len("1970-01-01T00:00:00.000+00:00")
