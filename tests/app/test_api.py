"""The scoring API's answers to a decided request (``fraudstream.app.api.answer``): a decision,
a repeat answered with the original decision (issue 21 item 5), an id reused for another
transaction, an id the stream decided, and a refusal."""

from __future__ import annotations

from pathlib import Path

import orjson

from fraudstream.app.api import REPLAY, answer
from fraudstream.core import engine
from fraudstream.core.messages import decode_transaction
from tests.app.conftest import tx_bytes

TX = decode_transaction(tx_bytes("tx-1", "card-1"), 1_000_000)
ORIGINAL = b'{"transaction_id":"tx-1","decision":"approve"}'


def test_a_repeat_of_an_api_request_is_the_original_decision_marked_as_a_replay() -> None:
    status, body, headers = answer(
        engine.Duplicate(TX, original=ORIGINAL, same_body=True), "tx-1", "fraud.decisions"
    )
    assert (status, body, headers) == (200, ORIGINAL, {REPLAY: "true"})


def test_an_id_reused_for_another_transaction_is_a_conflict() -> None:
    status, body, headers = answer(
        engine.Duplicate(TX, original=ORIGINAL, same_body=False), "tx-1", "fraud.decisions"
    )
    assert status == 409
    assert orjson.loads(body)["error"] == "transaction_id_reused"
    assert headers == {}


def test_an_id_the_stream_decided_is_already_decided() -> None:
    status, body, _ = answer(engine.Duplicate(TX), "tx-1", "fraud.decisions")
    assert status == 409
    got = orjson.loads(body)
    assert got["error"] == "already_decided"
    assert got["topic"] == "fraud.decisions"


def test_a_refused_request_is_unprocessable_with_its_reason() -> None:
    status, body, _ = answer(engine.Refused("key_mismatch", "bad key"), "tx-1", "t")
    assert status == 422
    assert orjson.loads(body)["error"] == "key_mismatch"


def test_the_openapi_document_names_the_replay_header_and_the_new_reason() -> None:
    doc = orjson.loads((Path(__file__).parents[2] / "fraudstream/app/openapi.json").read_bytes())
    post = doc["paths"]["/v1/score"]["post"]
    assert REPLAY in post["responses"]["200"]["headers"]
    assert (
        "transaction_id_reused"
        in doc["components"]["schemas"]["Error"]["properties"]["error"]["description"]
    )
