"""The synchronous scoring API (issue 9) on two real workers sharing the partitions: the API decides
like the stream, forwards to the partition's owner, never decides twice, and answers every bad
request with its status code."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from fraudstream.app.api import DECIDED_BY, PARTITION, REPLAY, card_partition
from fraudstream.core.messages import decode_transaction
from fraudstream.core.registry import load
from fraudstream.core.replay import replay
from fraudstream.core.routing import assign
from fraudstream.kafka.admin import create_topics
from fraudstream.kafka.clients import make_producer
from fraudstream.settings import Settings
from tests.integration.procs import REPO, Worker, fresh_settings, wait_for

pytestmark = pytest.mark.integration

SALT = "api-salt"
PARTITIONS = 2
# The in-flight limit the workers run with, when the setting exists (else the default of 256).
LIMIT = 4 if "api_max_inflight" in Settings.model_fields else 256


class Client:
    """One keep-alive HTTP/1.1 connection to a worker."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)

    def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, dict(r.getheaders()), r.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def score(self, body: bytes, retry_503: float = 30.0) -> tuple[int, dict[str, str], Any]:
        deadline = time.monotonic() + retry_503
        while True:
            status, headers, raw = self.request("POST", "/v1/score", body)
            if status != 503 or time.monotonic() > deadline:
                return status, headers, json.loads(raw)
            time.sleep(0.3)  # a rebalance in progress: what Retry-After asks for


def _tx(card: str, i: int, minute: int, amount: float = 42.0, **extra: Any) -> dict[str, Any]:
    return {
        "transaction_id": f"api-{card}-{i}",
        "card_id": card,
        "merchant_id": f"m-{i % 3}",
        "amount": amount,
        "currency": "EUR",
        "event_time": f"2026-05-01T12:{minute:02d}:00+02:00",
        "mcc": 5411,
        "country": "FR",
        "channel": "ecom",
        "device_id": "dev-1",
        **extra,
    }


def _card_in(partition: int, tag: str) -> str:
    for i in range(10_000):
        card = f"card-{tag}-{i}"
        if card_partition(card, PARTITIONS) == partition:
            return card
    raise AssertionError("no card found")


@pytest.fixture(scope="module")
def cluster(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, list[Worker], dict[int, Worker]]]:
    logs = tmp_path_factory.mktemp("api")
    s = fresh_settings(
        kafka_bootstrap,
        partitions=PARTITIONS,
        champion="champion-v1",
        challenger="challenger-v2",
        challenger_share=0.5,
        shadow=True,
        routing_salt=SALT,
    )
    create_topics(s)
    workers = [Worker(s, f"worker-{n}", logs, api_max_inflight=LIMIT).start() for n in (1, 2)]
    try:
        for w in workers:
            w.wait_ready()
        # Who owns which partition, as the API itself says: a probe per partition.
        owner: dict[int, Worker] = {}
        c = Client(workers[0].port)
        by_url = {f"http://127.0.0.1:{w.port}": w for w in workers}
        for p in range(PARTITIONS):
            status, headers, body = c.score(
                orjson.dumps(_tx(_card_in(p, f"probe{s.app_id}"), 0, 0))
            )
            assert status == 200, body
            assert int(headers[PARTITION]) == p
            owner[p] = by_url[headers[DECIDED_BY]]
        assert set(owner.values()) == set(workers), "the two workers should split the partitions"
        yield s, workers, owner
    finally:
        for w in workers:
            w.stop()


def _decisions_of(s: Settings, txid: str, expect_total: int) -> list[dict[str, Any]]:
    msgs = wait_for(s, [s.topic_decisions], expect_total, timeout=30)
    return [orjson.loads(m.value()) for m in msgs if m.key() == txid.encode()]


def _offline_score(s: Settings, history: list[dict[str, Any]], version: str) -> float:
    txs = [decode_transaction(orjson.dumps(t)) for t in history]
    x, ids = replay(txs)  # entity state included (these minutes are past every cutoff)
    assert ids[-1] == txs[-1].transaction_id
    return float(load(s.models_dir, version).predict(np.asarray(x[-1:], dtype=np.float32))[0])


def _stream_then_api(
    s: Settings, workers: list[Worker], owner: dict[int, Worker], via_owner: bool, tag: str
) -> None:
    card = _card_in(0, tag)
    owning = owner[0]
    other = next(w for w in workers if w is not owning)
    a = _tx(card, 1, 0, amount=12.0)
    b = _tx(card, 2, 3, amount=900.0, merchant_id="m-new", device_id="dev-new")
    start = len(wait_for(s, [s.topic_decisions], 0, timeout=5))
    p = make_producer(s)
    p.produce(s.topic_transactions, key=card.encode(), value=orjson.dumps(a))
    assert p.flush(30) == 0
    assert len(_decisions_of(s, a["transaction_id"], start + 1)) == 1

    target = owning if via_owner else other
    status, headers, got = Client(target.port).score(orjson.dumps(b))
    assert status == 200, got
    assert headers[DECIDED_BY] == f"http://127.0.0.1:{owning.port}"
    assert got["transaction_id"] == b["transaction_id"]
    assert got["variant"] == assign(card, SALT, 0.5)
    # The same score as the offline path on the card's history [A, B]: A's state was used.
    assert got["score"] == pytest.approx(_offline_score(s, [a, b], got["model_version"]), abs=1e-6)
    assert got["score"] != pytest.approx(_offline_score(s, [b], got["model_version"]), abs=1e-6)
    on_topic = _decisions_of(s, b["transaction_id"], start + 2)
    assert on_topic == [got], "the answer is the one decision written to fraud.decisions"
    scores = [
        orjson.loads(m.value())
        for m in wait_for(s, [s.topic_scores], 0, timeout=5)
        if m.key() == b["transaction_id"].encode()
    ]
    assert {sc["role"] for sc in scores} == {got["variant"], "shadow"}


def test_api_decides_like_the_stream_on_the_same_card_state(
    cluster: tuple[Settings, list[Worker], dict[int, Worker]],
) -> None:
    s, workers, owner = cluster
    _stream_then_api(s, workers, owner, via_owner=True, tag="local")


def test_a_request_for_a_card_of_the_other_worker_is_forwarded_and_answered_the_same(
    cluster: tuple[Settings, list[Worker], dict[int, Worker]],
) -> None:
    s, workers, owner = cluster
    _stream_then_api(s, workers, owner, via_owner=False, tag="remote")

    # The forwarding cost: the same kind of request, direct to the owner vs through the other.
    owning = owner[0]
    other = next(w for w in workers if w is not owning)
    direct, forwarded = Client(owning.port), Client(other.port)
    times: dict[str, list[float]] = {"direct": [], "forwarded": []}
    for i in range(40):
        for name, c in (("direct", direct), ("forwarded", forwarded)):
            body = orjson.dumps(_tx(_card_in(0, f"cost{i}{name}"), i, 10))
            t0 = time.perf_counter()
            status, _, got = c.score(body, retry_503=0)
            times[name].append(time.perf_counter() - t0)
            assert status == 200, got
    med = {k: statistics.median(v[5:]) * 1000 for k, v in times.items()}
    cost = med["forwarded"] - med["direct"]
    print(
        f"\nAPI latency (sequential, keep-alive), median of 35: direct {med['direct']:.2f} ms, "
        f"forwarded {med['forwarded']:.2f} ms, forwarding cost {cost:.2f} ms"
    )


def test_an_api_transaction_gets_no_second_decision_and_a_repeat_gets_the_original(
    cluster: tuple[Settings, list[Worker], dict[int, Worker]],
) -> None:
    s, workers, _ = cluster
    card = _card_in(1, "dedup")
    c = _tx(card, 1, 20)
    marker = _tx(card, 2, 25)
    start = len(wait_for(s, [s.topic_decisions], 0, timeout=5))
    status, _, first = Client(workers[0].port).score(orjson.dumps(c))
    assert status == 200, first
    p = make_producer(s)
    p.produce(s.topic_transactions, key=card.encode(), value=orjson.dumps(c))
    p.produce(s.topic_transactions, key=card.encode(), value=orjson.dumps(marker))
    assert p.flush(30) == 0
    assert len(_decisions_of(s, marker["transaction_id"], start + 2)) == 1
    assert _decisions_of(s, c["transaction_id"], start + 2) == [first]
    # Issue 21 item 5: a repeat through the API, on either worker, is the original decision
    # (a client's retry never decides twice); the id with another body is a conflict; an id
    # the stream decided is refused and says where its decision is.
    for w in workers:
        status, headers, body = Client(w.port).score(orjson.dumps(c))
        assert status == 200, body
        assert headers.get(REPLAY) == "true"
        assert body == first
        status, _, body = Client(w.port).score(orjson.dumps({**c, "amount": 4242.0}))
        assert status == 409, body
        assert body["error"] == "transaction_id_reused"
        status, _, body = Client(w.port).score(orjson.dumps(marker))
        assert status == 409, body
        assert body["error"] == "already_decided"
        assert body["topic"] == s.topic_decisions
        assert body["key"] == marker["transaction_id"]
    time.sleep(1.0)
    assert len(_decisions_of(s, c["transaction_id"], start + 2)) == 1
    assert len(_decisions_of(s, marker["transaction_id"], start + 2)) == 1


def _raw_post_headers(port: int, length: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n{{".encode()
    )
    return sock


def _inflight(w: Worker) -> float:
    for line in str(w.get("/metrics")[1]).splitlines():
        if line.startswith("fraudstream_api_inflight "):
            return float(line.split()[1])
    return -1.0


def test_bad_requests_get_their_status_codes_and_the_worker_survives(
    cluster: tuple[Settings, list[Worker], dict[int, Worker]],
) -> None:
    s, workers, _ = cluster
    w = workers[0]
    c = Client(w.port)
    good = _tx("card-bad-requests", 1, 30)

    status, _, raw = c.request("POST", "/v1/score", b"{not json")
    assert status == 400
    assert json.loads(raw)["error"] == "not_json"
    assert json.loads(raw)["message"]

    status, _, raw = c.request("POST", "/v1/score", orjson.dumps({**good, "amount": "12.50"}))
    assert (status, json.loads(raw)["error"]) == (400, "schema")
    assert "amount" in json.loads(raw)["message"]
    missing = {k: v for k, v in good.items() if k != "currency"}
    status, _, raw = c.request("POST", "/v1/score", orjson.dumps(missing))
    assert (status, json.loads(raw)["error"]) == (400, "schema")
    status, _, raw = c.request(
        "POST", "/v1/score", orjson.dumps({**good, "card_id": "4111 1111 1111 1111"})
    )
    assert (status, json.loads(raw)["error"]) == (400, "card_number")
    assert "4111" not in raw.decode()
    status, _, raw = c.request("POST", "/v1/score", b"")
    assert (status, json.loads(raw)["error"]) == (400, "empty")

    big = orjson.dumps({**good, "pad": "x" * s.max_message_bytes})
    status, _, raw = c.request("POST", "/v1/score", big)
    assert (status, json.loads(raw)["error"]) == (413, "too_large")
    # Chunked, without Content-Length: refused by the bytes read.
    status, _, raw = c.request("POST", "/v1/score", iter([big[:600_000], big[600_000:]]))
    assert (status, json.loads(raw)["error"]) == (413, "too_large")

    status, _, _ = c.request("GET", "/v1/score")
    assert status == 405

    # Overload: hold LIMIT requests in flight (headers sent, body never finished), then one more.
    held = [_raw_post_headers(w.port, 200) for _ in range(LIMIT)]
    try:
        deadline = time.monotonic() + 15
        while _inflight(w) < LIMIT and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _inflight(w) == LIMIT
        status, headers, raw = c.request("POST", "/v1/score", orjson.dumps(good))
        assert status == 503, raw
        assert json.loads(raw)["error"] == "overloaded"
        assert int(headers["Retry-After"]) >= 1
    finally:
        for sock in held:
            sock.close()

    # Still alive and scoring.
    status, _, got = c.score(orjson.dumps({**good, "transaction_id": "api-after-overload"}), 10)
    assert status == 200, got
    assert w.proc is not None
    assert w.proc.poll() is None
    assert w.get("/healthz")[0] == 200
    assert w.get("/readyz")[0] == 200


def test_the_served_openapi_document_is_the_repository_file(
    cluster: tuple[Settings, list[Worker], dict[int, Worker]],
) -> None:
    _, workers, _ = cluster
    status, headers, raw = Client(workers[1].port).request("GET", "/openapi.json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert raw == (REPO / "fraudstream" / "app" / "openapi.json").read_bytes()
    status, _, models = Client(workers[1].port).request("GET", "/v1/models")
    assert status == 200
    assert {m["version"] for m in json.loads(models)["loaded"]} == {"champion-v1", "challenger-v2"}
