"""The OpenAPI document kept in the repository: valid JSON, embedding the contract's schemas as they
are in fraudstream/schemas/, and describing every status the API answers with; the partitioner and
limiter of the API."""

from __future__ import annotations

import json

import pytest

from fraudstream.app.api import OPENAPI_PATH, InflightLimiter, card_partition
from fraudstream.core.messages import load_schema


def _doc() -> dict:
    return json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


def test_openapi_document_embeds_the_contract_schemas_unchanged() -> None:
    doc = _doc()
    assert doc["openapi"].startswith("3.1")
    for name, title in (("transaction", "Transaction"), ("decision", "Decision")):
        want = load_schema(name)
        want.pop("$schema")
        want.pop("$id")
        assert doc["components"]["schemas"][title] == want, f"regenerate {title} from the schemas"


def test_openapi_document_lists_every_endpoint_and_status() -> None:
    paths = _doc()["paths"]
    assert set(paths) == {"/v1/score", "/v1/models", "/healthz", "/readyz", "/openapi.json"}
    statuses = set(paths["/v1/score"]["post"]["responses"])
    assert statuses == {"200", "400", "409", "413", "422", "500", "503", "504"}
    assert "Retry-After" in paths["/v1/score"]["post"]["responses"]["503"]["headers"]


def test_openapi_refs_resolve() -> None:
    doc = _doc()
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


def test_card_partition_is_kafkas_murmur2() -> None:
    # Golden values of the Java client's Utils.toPositive(Utils.murmur2(key)) % n.
    from aiokafka.partitioner import DefaultPartitioner

    for card in ("card-1", "c", "card-ünïcode", "x" * 64):
        for n in (1, 2, 4, 12):
            assert card_partition(card, n) == DefaultPartitioner()(
                card.encode(), list(range(n)), []
            )
    # Kafka's own test vector: murmur2("21") == -973932308 (aiokafka returns it unsigned).
    from aiokafka.partitioner import murmur2

    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF


def test_inflight_limiter_refuses_past_its_limit_and_recovers() -> None:
    lim = InflightLimiter(2)
    assert lim.try_acquire()
    assert lim.try_acquire()
    assert not lim.try_acquire()
    lim.release()
    assert lim.try_acquire()
    lim.release()
    lim.release()
    with pytest.raises(RuntimeError):
        lim.release()
    with pytest.raises(ValueError):
        InflightLimiter(0)
