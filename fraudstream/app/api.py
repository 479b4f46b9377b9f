"""The synchronous scoring API on the worker's Faust web server: ``POST /v1/score`` and the
OpenAPI document at ``GET /openapi.json`` (the file ``fraudstream/app/openapi.json``, served as is).

A request is decided by the stream's own path (``Coordinator.request`` with the scoring handler):
same per-card record, routing, models, thresholds, reasons and dedup, and the Decision and Scores
go to ``fraud.decisions`` / ``fraud.scores`` like the stream's, in the partition's transaction.
Per-card state lives on the worker that owns the card's partition of the transactions topic, so:

- the partition is computed as the producers compute it (Kafka's murmur2 of the ``card_id``
  bytes, made positive, modulo the topic's partition count);
- if this worker owns it (``app.consumer.assignment()``), it decides here;
- otherwise the request is forwarded once, with the same body, to the owner's advertised URL from
  the partition assignor's metadata (``app.conf.canonical_url`` of each member). A forwarded
  request that lands on a worker that does not own the partition either (a rebalance in between)
  gets 503 + ``Retry-After``, never a second hop.

Faust's ``app.router.route_req`` is not used: it forwards method, headers and URL but not the
request body (a POST arrives empty), and it answers with ``web.text`` (status kept, headers such as
``Retry-After`` dropped).

Status codes: 200 Decision (a repeat of an API request within the dedup window: the original
decision, with ``X-Fraudstream-Replay: true``; a repeat while the original is uncommitted waits
for it); 400 invalid JSON or schema (``{"error": reason, "message": ...}``, reasons as on the
dead-letter topic); 409 already decided by the stream, or the id reused for another
transaction; 413 body too large; 422 valid but not scorable; 503 overloaded / not ready / owner
unreachable (always with ``Retry-After``); 504 the owner did not answer in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from faust.types import TP
from faust.web import View
from prometheus_client import Counter, Gauge, Histogram

from fraudstream.app.partitioning import card_home
from fraudstream.app.serving import ServingManager
from fraudstream.coordinator.coordinator import Coordinator
from fraudstream.core import engine
from fraudstream.core.messages import decode_transaction, encode_decision
from fraudstream.core.records import NO_OFFSET, Record
from fraudstream.errors import BrokerError, InvalidMessage
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.api")

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
JSON = "application/json"
#: Set on a request one worker forwards to another; a forwarded request is never forwarded again.
FORWARDED_BY = "X-Fraudstream-Forwarded-By"
#: On every /v1/score answer that a worker decided: that worker's canonical URL and the partition.
DECIDED_BY = "X-Fraudstream-Decided-By"
PARTITION = "X-Fraudstream-Partition"
#: On a 200 that repeats the decision of an earlier request with the same transaction.
REPLAY = "X-Fraudstream-Replay"
RETRY_AFTER_S = 1
FORWARD_TIMEOUT_S = 10.0
_READ_CHUNK = 65_536


def card_partition(card_id: str, partitions: int) -> int:
    """The partition of ``card_id`` in a topic of ``partitions`` partitions, as Kafka's default
    (murmur2) partitioner puts it: the Java client, aiokafka and librdkafka's ``murmur2_random``."""
    return card_home(card_id.encode(), partitions)


def answer(result: engine.Verdict, key: str, topic: str) -> tuple[int, bytes, dict[str, str]]:
    """The HTTP answer to a decided request: status, body and extra headers.

    A repeat of a request the API decided within the dedup window gets the original decision
    again (200, ``X-Fraudstream-Replay: true``; a client retrying after a timeout cannot
    decide twice); the same id with another transaction is a client error (409
    ``transaction_id_reused``); an id the stream decided is 409 ``already_decided``."""
    if isinstance(result, engine.Scored):
        return 200, encode_decision(result.decision), {}
    if isinstance(result, engine.Duplicate):
        if result.original is not None and result.same_body:
            return 200, result.original, {REPLAY: "true"}
        if result.original is not None:
            return (
                409,
                error_body(
                    "transaction_id_reused",
                    f"transaction {key!r} was decided within the dedup window for a different "
                    "transaction body; a transaction_id names one transaction. Send a new id, "
                    "or repeat the original body to get its decision again.",
                    transaction_id=key,
                ),
                {},
            )
        return (
            409,
            error_body(
                "already_decided",
                f"transaction {key!r} was already decided (within the dedup window); this "
                f"request made no new decision. Read the decision from topic {topic!r}, "
                "key = transaction_id.",
                transaction_id=key,
                topic=topic,
                key=key,
            ),
            {},
        )
    return 422, error_body(result.reason, result.message), {}


class InflightLimiter:
    """A bounded count of requests in flight that never waits: past ``limit``, refuse (503)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("released more often than acquired")
        self.in_flight -= 1


def error_body(error: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps({"error": error, "message": message, **extra})


class BodyTooLarge(Exception):
    pass


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body, refusing (``BodyTooLarge``) more than ``max_bytes`` before reading it all:
    by Content-Length when given, by the bytes read otherwise (chunked uploads)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(declared)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


class ScoringAPI:
    def __init__(
        self,
        app: Any,
        settings: Settings,
        serving: ServingManager,
        coordinator: Coordinator[engine.Verdict] | None,
    ) -> None:
        self.app = app
        self.s = settings
        self.serving = serving
        self.coordinator = coordinator
        self.max_bytes = self.s.max_message_bytes
        self.limiter = InflightLimiter(int(getattr(self.s, "api_max_inflight", 256)))
        self.openapi = OPENAPI_PATH.read_bytes()
        API_INFLIGHT.set_function(lambda: self.limiter.in_flight)

    # ---------------------------------------------------------------- answers
    def _answer(
        self, web: Any, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> Any:
        API_REQUESTS.labels(status=str(status)).inc()
        return web.bytes(body, content_type=JSON, status=status, headers=headers or {})

    def _error(
        self, web: Any, status: int, error: str, message: str, retry: bool = False, **extra: Any
    ) -> Any:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
        return self._answer(web, status, error_body(error, message, **extra), headers)

    # ---------------------------------------------------------------- POST /v1/score
    async def score(self, web: Any, request: Any) -> Any:
        if not self.limiter.try_acquire():
            return self._error(
                web,
                503,
                "overloaded",
                f"more than {self.limiter.limit} scoring requests are in flight on this worker; "
                f"retry after {RETRY_AFTER_S}s",
                retry=True,
            )
        started = time.perf_counter()
        release_here = True
        try:
            try:
                raw = await read_body(request, self.max_bytes)
            except BodyTooLarge as exc:
                return self._error(
                    web,
                    413,
                    "too_large",
                    f"the body is {exc.args[0]} bytes or more; the maximum is {self.max_bytes} "
                    "(FRAUD_MAX_MESSAGE_BYTES)",
                )
            except (aiohttp.ClientPayloadError, ConnectionError, EOFError):
                return self._error(web, 400, "incomplete_body", "the request body was cut short")
            try:
                tx = decode_transaction(raw, self.max_bytes)
            except InvalidMessage as exc:
                return self._error(web, 400, exc.reason, exc.message)

            ready = self._not_ready()
            if ready is not None:
                return self._error(web, 503, "not_ready", ready, retry=True)
            partitions = self._partition_count()
            partition = card_partition(tx.card_id, partitions)
            if TP(self.s.topic_transactions, partition) in self.app.consumer.assignment():
                release_here = False
                return await self._decide_here(web, tx, raw, partition)
            if request.headers.get(FORWARDED_BY):
                return self._error(
                    web,
                    503,
                    "not_owner",
                    f"partition {partition} moved while the request was forwarded; retry",
                    retry=True,
                )
            return await self._forward(web, raw, partition)
        except Exception:
            log.exception("scoring request failed")
            return self._error(web, 500, "internal", "the worker could not score this request")
        finally:
            API_LATENCY.observe(time.perf_counter() - started)
            if release_here:
                self.limiter.release()

    async def _decide_here(self, web: Any, tx: Any, raw: bytes, partition: int) -> Any:
        coordinator = self.coordinator
        if coordinator is None:
            self.limiter.release()
            return self._error(web, 503, "unavailable", "local scoring is not available", True)
        record = Record(
            self.s.topic_transactions, partition, NO_OFFSET, tx.card_id.encode(), raw, time.time()
        )
        # Shielded: once the coordinator has started, it writes its outputs and the card record
        # even if the client goes away; the in-flight slot is freed when it is really done.
        task = asyncio.ensure_future(coordinator.request(record))
        task.add_done_callback(lambda _t: self.limiter.release())
        try:
            result = await asyncio.shield(task)
        except BrokerError as exc:
            return self._error(web, 503, "rebalancing", str(exc), True)
        headers = {DECIDED_BY: str(self.app.conf.canonical_url), PARTITION: str(partition)}
        status, body, extra = answer(result, tx.transaction_id, self.s.topic_decisions)
        return self._answer(web, status, body, headers | extra)

    async def _forward(self, web: Any, raw: bytes, partition: int) -> Any:
        own = str(self.app.conf.canonical_url)
        owner = self._owner_url(partition)
        if owner is None:
            return self._error(
                web, 503, "no_owner", f"no worker owns partition {partition} right now", True
            )
        if owner.rstrip("/") == own.rstrip("/"):
            log.error(
                "partition %d is advertised at this worker's own URL %s but not assigned here: "
                "workers must advertise distinct URLs (canonical_url)",
                partition,
                own,
            )
            return self._error(
                web, 503, "misconfigured", "workers advertise the same URL; see the logs", True
            )
        url = owner.rstrip("/") + "/v1/score"
        API_FORWARDED.inc()
        try:
            async with self.app.http_client.post(
                url,
                data=raw,
                headers={"Content-Type": JSON, FORWARDED_BY: own},
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as resp:
                body = await resp.read()
                headers = {
                    k: v
                    for k, v in resp.headers.items()
                    if k in ("Retry-After", DECIDED_BY, PARTITION, REPLAY)
                }
                return self._answer(web, resp.status, body, headers)
        except TimeoutError:
            return self._error(
                web, 504, "owner_timeout", f"the owner of partition {partition} did not answer"
            )
        except aiohttp.ClientError as exc:
            log.warning("forwarding to %s failed: %r", url, exc)
            return self._error(
                web,
                503,
                "owner_unreachable",
                f"the owner of partition {partition} cannot be reached; retry",
                retry=True,
            )

    # ---------------------------------------------------------------- ownership
    def _not_ready(self) -> str | None:
        if self.serving.current is None:
            return "no model is loaded yet"
        if self.app.rebalancing:
            return "partitions are being rebalanced"
        if not self.app.consumer.assignment():
            return "no partition is assigned to this worker yet"
        return None

    def _partition_count(self) -> int:
        topic = self.s.topic_transactions
        try:
            n = self.app.consumer.topic_partitions(topic)
        except Exception:  # noqa: BLE001 - private metadata may not be there yet
            n = None
        if n:
            return int(n)
        seen = [p for _, p in self._owners()]
        return max(seen) + 1 if seen else self.s.partitions

    def _owners(self) -> list[tuple[str, int]]:
        topic = self.s.topic_transactions
        # The concrete PartitionAssignor has it; PartitionAssignorT does not declare it.
        assignor: Any = self.app.assignor
        meta = assignor.external_topics_metadata()
        return [(url, p) for url, tps in meta.items() for p in tps.get(topic, ())]

    def _owner_url(self, partition: int) -> str | None:
        for url, p in self._owners():
            if p == partition:
                return url
        return None

    # ---------------------------------------------------------------- GET /openapi.json
    def openapi_response(self, web: Any) -> Any:
        return web.bytes(self.openapi, content_type=JSON)


API_REQUESTS = Counter(
    "fraudstream_api_requests_total", "POST /v1/score answers by HTTP status", ["status"]
)
API_FORWARDED = Counter(
    "fraudstream_api_forwarded_total", "scoring requests forwarded to the partition's owner"
)
API_INFLIGHT = Gauge(
    "fraudstream_api_inflight",
    "POST /v1/score requests in flight on this worker (the limit's count)",
)
API_LATENCY = Histogram(
    "fraudstream_api_request_seconds",
    "POST /v1/score time on this worker, forwarding included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def install(
    app: Any,
    settings: Settings,
    serving: ServingManager,
    coordinator: Coordinator[engine.Verdict] | None,
) -> ScoringAPI:
    api = ScoringAPI(app, settings, serving, coordinator)

    class Score(View):
        async def post(self, request: Any) -> Any:
            return await api.score(self.web, request)

    app.page("/v1/score", name="score")(Score)

    @app.page("/openapi.json", name="openapi")
    async def openapi(web: Any, request: Any) -> Any:
        return api.openapi_response(web)

    return api
