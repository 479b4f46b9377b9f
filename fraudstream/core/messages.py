"""The messages of the contract (docs/CONTRACT.md, fraudstream/schemas/): plain data, decode,
encode.

Decoders take raw bytes and either return a message or raise ``InvalidMessage`` with a stable
reason code; encoders return UTF-8 JSON bytes carrying ``schema_version``.

The JSON Schema files in ``fraudstream/schemas/`` (package data) are the single source of truth:
they are compiled once, at import, with fastjsonschema, and the tests validate every encoder's
output against them.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Literal, cast

import fastjsonschema
import orjson

from fraudstream.errors import InvalidMessage

SCHEMA_VERSION = 1

DecisionKind = Literal["approve", "review", "decline"]
Variant = Literal["champion", "challenger"]
Role = Literal["champion", "challenger", "shadow"]
OutcomeKind = Literal["TP", "FP", "TN", "FN"]


@dataclass(frozen=True, slots=True)
class Transaction:
    transaction_id: str
    card_id: str
    merchant_id: str
    amount: float
    currency: str
    event_time: str  # as received (RFC 3339 with offset)
    ts: float  # event_time as POSIX seconds (UTC)
    utc_offset_s: int  # the event's own UTC offset, for local hour-of-day and weekday
    mcc: int | None = None
    country: str | None = None
    channel: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    feature: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class ReasonCode:
    """A reason in words: a stable code (core/reasons.py, core/rules.py), a sentence filled with
    the transaction's values, where it came from (``model`` or ``rule``) and what (the feature
    name or the rule id)."""

    code: str
    text: str
    source: Literal["model", "rule"]
    ref: str


@dataclass(frozen=True, slots=True)
class Decision:
    transaction_id: str
    card_id: str
    decision: DecisionKind
    score: float
    model_version: str
    variant: Variant
    reasons: tuple[Reason, ...]
    decided_at: str
    # Not in the contract's minimum, added so the feedback join can value outcomes:
    amount: float = 0.0
    currency: str = ""
    schema_version: int = SCHEMA_VERSION
    # In shadow mode, what the other model said (also on fraud.scores with role "shadow"):
    # the feedback join evaluates it from here without reading fraud.scores.
    shadow: Shadow | None = None
    # The controls in force (0: none published, the model's own thresholds / no rules) and the
    # reasons in words, rule hits first. Absent in records written before.
    policy_version: int = 0
    rules_version: int = 0
    reason_codes: tuple[ReasonCode, ...] = ()


@dataclass(frozen=True, slots=True)
class Shadow:
    model_version: str
    score: float
    decision: DecisionKind


@dataclass(frozen=True, slots=True)
class Score:
    transaction_id: str
    model_version: str
    role: Role
    score: float
    scored_at: str
    # What this version's thresholds would decide: lets the join evaluate shadow scores.
    decision: DecisionKind = "approve"
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Feedback:
    transaction_id: str
    is_fraud: bool
    source: str
    reported_at: str


@dataclass(frozen=True, slots=True)
class Outcome:
    transaction_id: str
    model_version: str
    variant: Role
    decision: DecisionKind
    score: float
    is_fraud: bool
    outcome: OutcomeKind
    amount: float
    currency: str
    labelled_at: str
    schema_version: int = SCHEMA_VERSION
    # Added for card-level statistics and maturity windows; "" in records written before.
    card_id: str = ""
    decided_at: str = ""


@dataclass(frozen=True, slots=True)
class Routing:
    champion: str
    challenger: str | None = None
    challenger_share: float = 0.0
    shadow: bool = False
    salt: str = "fraudstream"
    updated_at: str = ""


# --------------------------------------------------------------------------------------------
# Reason codes: the ``error.class`` header on the dead-letter topic and the metric label. Stable:
# dashboards and alerts key on them, so add codes, never rename them.
REASONS: dict[str, str] = {
    "empty": "no value at all (a null or zero-length Kafka value)",
    "too_large": "the value is larger than the accepted maximum size",
    "not_utf8": "the value is not valid UTF-8",
    "not_json": "the value is UTF-8 but not valid JSON",
    "not_object": "the value is JSON but not an object",
    "schema": "a field is missing, of the wrong type, out of range or not an allowed value",
    "bad_currency": "currency is not an ISO 4217 code of the schema's list",
    "bad_timestamp": "a timestamp is not RFC 3339 with a UTC offset, or not a real date",
    "card_number": "card_id looks like a card number (PAN) instead of a token; value not shown",
    "bad_routing": "a routing message is inconsistent (e.g. a share without a challenger)",
}

SCHEMA_NAMES = (
    "transaction",
    "decision",
    "score",
    "feedback",
    "outcome",
    "routing",
    "policy",
    "rules",
)

_ECHO_MAX = 40
# Digit runs a card number could hide in, separators allowed: masked in every echoed value.
_PAN_RUN = re.compile(r"\d(?:[ -]?\d){11,18}")
_TIME_FIELDS = frozenset({"event_time", "reported_at", "decided_at", "scored_at", "labelled_at"})
_JSON_TYPE = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
# fastjsonschema turns an enum into a chain of comparisons: 179 currencies cost microseconds per
# message. Enums longer than this become a set lookup with the very same members (see _compile).
_ENUM_AS_SET_MIN = 16
_ENUM_FORMAT_PREFIX = "fraudstream-enum:"


def schema_path(name: str) -> Traversable:
    """The JSON Schema file of one contract message, e.g. ``schema_path("transaction")``: package
    data (``fraudstream/schemas/``), read through importlib.resources so that an installed wheel
    finds it as well as a source checkout does."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return resources.files("fraudstream").joinpath("schemas", f"{name}.json")


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema file (a fresh copy: callers may modify it)."""
    return cast(dict[str, Any], json.loads(schema_path(name).read_text(encoding="utf-8")))


def _enums_as_sets(node: Any, formats: dict[str, Callable[[Any], bool]]) -> Any:
    """Replace long all-string enums by an equivalent custom format doing a set lookup."""
    if isinstance(node, list):
        return [_enums_as_sets(x, formats) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _enums_as_sets(v, formats) for k, v in node.items()}
    enum = out.get("enum")
    if (
        isinstance(enum, list)
        and len(enum) >= _ENUM_AS_SET_MIN
        and all(isinstance(x, str) for x in enum)
        and out.get("type") == "string"
        and "format" not in out
    ):
        name = f"{_ENUM_FORMAT_PREFIX}{len(formats)}"
        formats[name] = frozenset(enum).__contains__
        del out["enum"]
        out["format"] = name
    return out


def _compile(name: str, *, tolerant: bool = False) -> Callable[[Any], Any]:
    schema = load_schema(name)
    if tolerant:
        # Readers of our outputs ignore fields a later minor version may add.
        schema["additionalProperties"] = True
    formats: dict[str, Callable[[Any], bool]] = {}
    fast = _enums_as_sets(copy.deepcopy(schema), formats)
    return cast(Callable[[Any], Any], fastjsonschema.compile(fast, formats=formats))


_VALIDATE: dict[str, Callable[[Any], Any]] = {
    "transaction": _compile("transaction"),
    "feedback": _compile("feedback"),
    "routing": _compile("routing"),
    "policy": _compile("policy"),
    "rules": _compile("rules"),
    "decision": _compile("decision", tolerant=True),
    "score": _compile("score", tolerant=True),
    "outcome": _compile("outcome", tolerant=True),
}
_VALIDATE_TRANSACTION = _VALIDATE["transaction"]


# --------------------------------------------------------------------------------------------
# Errors


def _show(value: Any) -> str:
    """A short, safe rendering of an offending value: truncated, card-number-like digits masked."""
    if isinstance(value, str):
        text = value[: _ECHO_MAX + 20]  # mask before truncating: no half-PAN survives
        text = _PAN_RUN.sub("<digits>", text)
        return repr(text[:_ECHO_MAX] + ("…" if len(value) > _ECHO_MAX else ""))
    if isinstance(value, bool | int | float) or value is None:
        return _PAN_RUN.sub("<digits>", json.dumps(value))[:_ECHO_MAX]
    return f"a JSON {_JSON_TYPE.get(type(value), type(value).__name__)}"


def _num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return str(x)


def _schema_error(
    exc: fastjsonschema.JsonSchemaValueException, obj: dict[str, Any]
) -> InvalidMessage:
    field = (exc.name or "").partition(".")[2]
    rule = exc.rule
    limit = exc.rule_definition
    value = exc.value
    if rule == "required" and not field:
        required = exc.definition.get("required", ())
        missing = [f for f in required if f not in obj]
        return InvalidMessage("schema", f"missing required field(s): {', '.join(missing)}")
    label = field or "message"
    if field == "card_id" and rule == "pattern":
        return InvalidMessage(
            "card_number",
            "card_id looks like a card number (12-19 digits); send the card token instead",
        )
    if rule == "type":
        want = limit if isinstance(limit, str) else " or ".join(limit)
        got = _JSON_TYPE.get(type(value), type(value).__name__)
        problem = f"expected {want}, got {got}"
    elif rule in ("minimum", "exclusiveMinimum"):
        problem = f"{_show(value)} is less than the minimum of {_num(limit)}"
    elif rule in ("maximum", "exclusiveMaximum"):
        problem = f"{_show(value)} is greater than the maximum of {_num(limit)}"
    elif rule == "minLength":
        problem = "must not be empty" if limit == 1 else f"is shorter than {limit} characters"
    elif rule == "maxLength":
        problem = f"is {len(value)} characters long; the maximum is {limit}"
    elif rule == "enum":
        allowed = ", ".join("null" if x is None else str(x) for x in limit)
        problem = f"{_show(value)} is not one of {allowed}"
    elif rule == "format" and isinstance(limit, str) and limit.startswith(_ENUM_FORMAT_PREFIX):
        problem = f"{_show(value)} is not one of the allowed values"
    elif rule == "format":
        problem = f"{_show(value)} is not a valid {limit}"
    elif rule == "pattern":
        problem = f"{_show(value)} does not match {limit}"
    elif rule == "required" and isinstance(value, dict):
        missing = [f for f in exc.definition.get("required", ()) if f not in value]
        problem = f"missing required field(s): {', '.join(missing)}"
    elif rule == "const":
        problem = f"{_show(value)} must be {json.dumps(limit)}"
    else:
        problem = f"{_show(value)} is not valid ({rule})"
    if field == "currency":
        return InvalidMessage(
            "bad_currency", f"currency: {problem} (expected an ISO 4217 code such as EUR)"
        )
    if field in _TIME_FIELDS:
        return InvalidMessage(
            "bad_timestamp", f"{field}: {problem} (expected RFC 3339 with offset)"
        )
    return InvalidMessage("schema", f"{label}: {problem}")


def _undecodable(raw: bytes) -> InvalidMessage:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidMessage("not_utf8", f"not valid UTF-8 (byte {exc.start}: {exc.reason})")
    try:
        json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # Re-parsed with the stdlib only to say what and where, never quoting the payload.
        where = getattr(exc, "msg", "invalid JSON")
        pos = getattr(exc, "pos", None)
        return InvalidMessage("not_json", f"not JSON: {where}" + (f" at char {pos}" if pos else ""))
    return InvalidMessage(
        "not_json", "not JSON (orjson rejects it: e.g. NaN or a number too large)"
    )


def _load_object(raw: bytes | None, max_bytes: int, name: str) -> dict[str, Any]:
    """Bytes to a schema-valid dict, or InvalidMessage. Raised outside except blocks on purpose:
    no chained exception carries the offending value into a log."""
    if not raw:
        raise InvalidMessage("empty", f"empty {name}: the value is null or zero bytes")
    if len(raw) > max_bytes:
        raise InvalidMessage("too_large", f"{name} is {len(raw)} bytes; the maximum is {max_bytes}")
    failed = False
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        failed = True
    if failed:
        raise _undecodable(raw)
    if type(obj) is not dict:
        raise InvalidMessage("not_object", f"{name} must be a JSON object, got {_show(obj)}")
    error = None
    try:
        _VALIDATE[name](obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        error = _schema_error(exc, obj)
    if error is not None:
        raise error
    return cast(dict[str, Any], obj)


def load_object(raw: bytes | None, max_bytes: int, name: str) -> dict[str, Any]:
    """Bytes to a dict valid against schema ``name`` (control messages decoded in their own
    modules: core/policy.py, core/rules.py), or InvalidMessage."""
    return _load_object(raw, max_bytes, name)


def _parse_time(text: str, field: str) -> datetime:
    """RFC 3339 to an aware datetime; the schema's regex has vetted the shape already."""
    problem = ""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        try:  # RFC 3339 allows lower-case t and z; Python 3.11 does not.
            dt = datetime.fromisoformat(text.upper())
        except ValueError as exc:
            problem = str(exc).partition(":")[0]
    if problem:
        raise InvalidMessage(
            "bad_timestamp", f"{field}: {_show(text)} is not a real date-time ({problem})"
        )
    if dt.tzinfo is None:
        raise InvalidMessage("bad_timestamp", f"{field}: {_show(text)} has no UTC offset")
    return dt


# --------------------------------------------------------------------------------------------
# Decoders


def decode_transaction(raw: bytes | None, max_bytes: int = 1_000_000) -> Transaction:
    """A Transaction from a Kafka value, or InvalidMessage (see REASONS)."""
    obj = _load_object(raw, max_bytes, "transaction")
    event_time: str = obj["event_time"]
    dt = _parse_time(event_time, "event_time")
    offset = dt.utcoffset()
    get = obj.get
    mcc = get("mcc")
    return Transaction(
        obj["transaction_id"],
        obj["card_id"],
        obj["merchant_id"],
        float(obj["amount"]),
        obj["currency"],
        event_time,
        dt.timestamp(),
        int(offset.total_seconds()) if offset is not None else 0,
        None if mcc is None else int(mcc),  # JSON Schema counts 5.0 as an integer
        get("country"),
        get("channel"),
        get("device_id"),
    )


def decode_feedback(raw: bytes | None, max_bytes: int = 1_000_000) -> Feedback:
    obj = _load_object(raw, max_bytes, "feedback")
    _parse_time(obj["reported_at"], "reported_at")
    return Feedback(obj["transaction_id"], obj["is_fraud"], obj["source"], obj["reported_at"])


def routing_problem(r: Routing) -> str | None:
    """What is inconsistent in a routing, or None. Shared by decode_routing and the CLI checks."""
    if not (0.0 <= r.challenger_share <= 1.0):
        return f"challenger_share must be between 0 and 1, got {r.challenger_share}"
    if r.challenger is None and r.challenger_share > 0:
        return (
            f"challenger_share is {r.challenger_share} but there is no challenger; "
            "set a challenger or a share of 0"
        )
    if r.challenger is not None and r.challenger == r.champion:
        return f"champion and challenger are the same version ({r.champion}); pick another"
    if not r.champion:
        return "champion must be a model version, got an empty string"
    return None


def decode_routing(raw: bytes | None, max_bytes: int = 1_000_000) -> Routing:
    obj = _load_object(raw, max_bytes, "routing")
    updated_at = obj.get("updated_at", "")
    if updated_at:
        _parse_time(updated_at, "updated_at")
    routing = Routing(
        champion=obj["champion"],
        challenger=obj.get("challenger"),
        challenger_share=float(obj.get("challenger_share", 0.0)),
        shadow=obj.get("shadow", False),
        salt=obj.get("salt", "fraudstream"),
        updated_at=updated_at,
    )
    problem = routing_problem(routing)
    if problem is not None:
        raise InvalidMessage("bad_routing", problem)
    return routing


def decode_decision(raw: bytes | None, max_bytes: int = 1_000_000) -> Decision:
    obj = _load_object(raw, max_bytes, "decision")
    return Decision(
        transaction_id=obj["transaction_id"],
        card_id=obj["card_id"],
        decision=obj["decision"],
        score=float(obj["score"]),
        model_version=obj["model_version"],
        variant=obj["variant"],
        reasons=tuple(
            Reason(
                r["feature"],
                math.nan if r["value"] is None else float(r["value"]),
                float(r["contribution"]),
            )
            for r in obj["reasons"]
        ),
        decided_at=obj["decided_at"],
        amount=float(obj["amount"]),
        currency=obj["currency"],
        schema_version=obj["schema_version"],
        shadow=(
            Shadow(
                obj["shadow"]["model_version"],
                float(obj["shadow"]["score"]),
                obj["shadow"]["decision"],
            )
            if obj.get("shadow")
            else None
        ),
        policy_version=obj.get("policy_version", 0),
        rules_version=obj.get("rules_version", 0),
        reason_codes=tuple(
            ReasonCode(r["code"], r["text"], r["source"], r["ref"])
            for r in obj.get("reason_codes", ())
        ),
    )


def decode_score(raw: bytes | None, max_bytes: int = 1_000_000) -> Score:
    obj = _load_object(raw, max_bytes, "score")
    return Score(
        transaction_id=obj["transaction_id"],
        model_version=obj["model_version"],
        role=obj["role"],
        score=float(obj["score"]),
        scored_at=obj["scored_at"],
        decision=obj["decision"],
        schema_version=obj["schema_version"],
    )


def decode_outcome(raw: bytes | None, max_bytes: int = 1_000_000) -> Outcome:
    obj = _load_object(raw, max_bytes, "outcome")
    return Outcome(
        transaction_id=obj["transaction_id"],
        model_version=obj["model_version"],
        variant=obj["variant"],
        decision=obj["decision"],
        score=float(obj["score"]),
        is_fraud=obj["is_fraud"],
        outcome=obj["outcome"],
        amount=float(obj["amount"]),
        currency=obj["currency"],
        labelled_at=obj["labelled_at"],
        schema_version=obj["schema_version"],
        card_id=obj.get("card_id", ""),
        decided_at=obj.get("decided_at", ""),
    )


# --------------------------------------------------------------------------------------------
# Encoders. Field order follows the dataclasses; numpy scalars are accepted (scores come from
# numpy arrays) and a NaN becomes null.

_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def encode_transaction(t: Transaction) -> bytes:
    """The wire form; ``event_time`` is the original string, absent optionals are omitted."""
    out: dict[str, Any] = {
        "transaction_id": t.transaction_id,
        "card_id": t.card_id,
        "merchant_id": t.merchant_id,
        "amount": t.amount,
        "currency": t.currency,
        "event_time": t.event_time,
    }
    if t.mcc is not None:
        out["mcc"] = t.mcc
    if t.country is not None:
        out["country"] = t.country
    if t.channel is not None:
        out["channel"] = t.channel
    if t.device_id is not None:
        out["device_id"] = t.device_id
    out["schema_version"] = SCHEMA_VERSION
    return orjson.dumps(out, option=_DUMPS_OPTS)


def encode_decision(d: Decision) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": d.transaction_id,
            "card_id": d.card_id,
            "decision": d.decision,
            "score": d.score,
            "model_version": d.model_version,
            "variant": d.variant,
            "reasons": [
                {"feature": r.feature, "value": r.value, "contribution": r.contribution}
                for r in d.reasons
            ],
            "decided_at": d.decided_at,
            "amount": d.amount,
            "currency": d.currency,
            "schema_version": d.schema_version,
            **(
                {
                    "shadow": {
                        "model_version": d.shadow.model_version,
                        "score": d.shadow.score,
                        "decision": d.shadow.decision,
                    }
                }
                if d.shadow is not None
                else {}
            ),
            "policy_version": d.policy_version,
            "rules_version": d.rules_version,
            "reason_codes": [
                {"code": r.code, "text": r.text, "source": r.source, "ref": r.ref}
                for r in d.reason_codes
            ],
        },
        option=_DUMPS_OPTS,
    )


def encode_score(s: Score) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": s.transaction_id,
            "model_version": s.model_version,
            "role": s.role,
            "score": s.score,
            "scored_at": s.scored_at,
            "decision": s.decision,
            "schema_version": s.schema_version,
        },
        option=_DUMPS_OPTS,
    )


def encode_feedback(f: Feedback) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": f.transaction_id,
            "is_fraud": f.is_fraud,
            "source": f.source,
            "reported_at": f.reported_at,
            "schema_version": SCHEMA_VERSION,
        }
    )


def encode_outcome(o: Outcome) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": o.transaction_id,
            "model_version": o.model_version,
            "variant": o.variant,
            "decision": o.decision,
            "score": o.score,
            "is_fraud": o.is_fraud,
            "outcome": o.outcome,
            "amount": o.amount,
            "currency": o.currency,
            "labelled_at": o.labelled_at,
            "schema_version": o.schema_version,
            **({"card_id": o.card_id} if o.card_id else {}),
            **({"decided_at": o.decided_at} if o.decided_at else {}),
        },
        option=_DUMPS_OPTS,
    )


def encode_routing(r: Routing) -> bytes:
    return orjson.dumps(
        {
            "champion": r.champion,
            "challenger": r.challenger,
            "challenger_share": r.challenger_share,
            "shadow": r.shadow,
            "salt": r.salt,
            "updated_at": r.updated_at,
            "schema_version": SCHEMA_VERSION,
        }
    )


# --------------------------------------------------------------------------------------------
# Time


def iso_from_ts(ts: float) -> str:
    """POSIX seconds to RFC 3339 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.000+00:00``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def utc_now_iso() -> str:
    """Now, as iso_from_ts does it. For the wiring; pure code takes ``now`` as an argument."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
