"""From a score to a decision, and the reasons shown with it. Pure and vectorised where it pays.

The thresholds are a versioned policy of their own (``Policy``): per model version and per
segment (channel, merchant category, currency, amount band), published live on ``fraud.control``
and recorded in every decision (``policy_version``). A model's metadata keeps the thresholds it
was shipped with; they apply wherever the policy in force says nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from fraudstream.core.messages import DecisionKind, Reason, Transaction, load_object
from fraudstream.errors import ConfigError, InvalidMessage, ScoringError

_KINDS: tuple[DecisionKind, DecisionKind, DecisionKind] = ("approve", "review", "decline")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A score >= ``decline`` is declined, >= ``review`` goes to review, anything lower approved."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        # NaN fails every comparison, so this also refuses NaN thresholds.
        if not (0.0 <= self.review <= self.decline <= 1.0):
            raise ConfigError(
                f"thresholds must satisfy 0 <= review <= decline <= 1, "
                f"got review={self.review}, decline={self.decline}"
            )


def decide(score: float, thresholds: Thresholds) -> DecisionKind:
    if score >= thresholds.decline:
        return "decline"
    if score >= thresholds.review:
        return "review"
    if math.isnan(score):
        # A NaN would otherwise be approved silently: refuse it loudly instead.
        raise ScoringError("nan_score", "the model returned NaN; the transaction cannot be decided")
    return "approve"


def decide_many(scores: npt.NDArray[np.floating], thresholds: Thresholds) -> list[DecisionKind]:
    """decide() for a batch, same rules (including the NaN refusal)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ScoringError("nan_score", "the model returned NaN; the batch cannot be decided")
    level = (scores >= thresholds.review).astype(np.int8) + (scores >= thresholds.decline)
    kinds = _KINDS
    return [kinds[i] for i in level.tolist()]


def top_reasons(
    contribs_row: npt.NDArray[np.floating],
    feature_names: Sequence[str],
    values_row: npt.NDArray[np.floating],
    k: int = 3,
) -> tuple[Reason, ...]:
    """The ``k`` features pushing the score most toward fraud, largest contribution first.

    ``contribs_row`` is one row of XGBoost ``pred_contribs``: one column per feature, then the
    bias, which is not a feature and is dropped. When fewer than ``k`` contributions are positive
    the largest remaining ones fill up. Ties keep feature order. Values round to 6 decimals.
    """
    contribs = np.asarray(contribs_row, dtype=np.float64)
    values = np.asarray(values_row, dtype=np.float64)
    if contribs.ndim != 1 or values.ndim != 1:
        raise ValueError(
            f"one row expected; got contributions {contribs.shape}, values {values.shape}"
        )
    [reasons] = top_reasons_rows(contribs[None, :], feature_names, values[None, :], k)
    return reasons


def top_reasons_rows(
    contribs: npt.NDArray[np.floating],
    feature_names: Sequence[str],
    values: npt.NDArray[np.floating],
    k: int = 3,
) -> list[tuple[Reason, ...]]:
    """``top_reasons`` of every row at once: one sort for the batch (a flagged burst must not
    cost a Python sort per row). Row ``r`` of the result is ``top_reasons(contribs[r], ...,
    values[r])`` exactly."""
    n = len(feature_names)
    c = np.asarray(contribs, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] not in (n, n + 1):
        raise ValueError(
            f"contributions have shape {c.shape}; expected (rows, {n}) or (rows, {n + 1}) with bias"
        )
    c = c[:, :n]
    v = np.asarray(values, dtype=np.float64)
    if v.shape != c.shape:
        raise ValueError(f"values have shape {v.shape}; expected {c.shape}")
    # NaN contributions sort last: -nan would otherwise land anywhere.
    order = np.argsort(np.where(np.isnan(c), np.inf, -c), axis=1, kind="stable")[:, :k]
    tops = np.take_along_axis(c, order, axis=1).tolist()
    vals = np.take_along_axis(v, order, axis=1).tolist()
    return [
        tuple(
            Reason(feature_names[i], round(val, 6), round(con, 6))
            for i, val, con in zip(idx, vrow, crow, strict=True)
        )
        for idx, vrow, crow in zip(order.tolist(), vals, tops, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# The decision policy: thresholds apart from the model, per model version and per segment.


@dataclass(frozen=True, slots=True)
class Segment:
    """Which transactions a segment's thresholds apply to; a field left None matches anything.
    ``amount_min`` is inclusive, ``amount_max`` exclusive (amount bands tile without overlap)."""

    channel: str | None = None
    mcc: frozenset[int] | None = None
    currency: str | None = None
    amount_min: float | None = None
    amount_max: float | None = None

    def matches(self, tx: Transaction) -> bool:
        return (
            (self.channel is None or tx.channel == self.channel)
            and (self.mcc is None or tx.mcc in self.mcc)
            and (self.currency is None or tx.currency == self.currency)
            and (self.amount_min is None or tx.amount >= self.amount_min)
            and (self.amount_max is None or tx.amount < self.amount_max)
        )


@dataclass(frozen=True, slots=True)
class SegmentThresholds:
    name: str
    segment: Segment
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """One model version's thresholds: the first matching segment's, else ``default``, else the
    model's own (its metadata)."""

    default: Thresholds | None = None
    segments: tuple[SegmentThresholds, ...] = ()


#: The ``models`` key whose entry applies to every version without its own entry.
ANY_MODEL = "*"


@dataclass(frozen=True, slots=True)
class Policy:
    """A versioned decision policy, published on ``fraud.control`` (key ``policy``). Version 0 is
    the policy in force before any was published: every model decides at its own thresholds."""

    version: int
    models: Mapping[str, ModelPolicy] = field(default_factory=dict)
    updated_at: str = ""
    note: str = ""

    def for_model(self, version: str) -> ModelPolicy | None:
        return self.models.get(version) or self.models.get(ANY_MODEL)

    def thresholds(self, version: str, tx: Transaction, own: Thresholds) -> Thresholds:
        """The thresholds deciding ``tx`` when ``version`` scores it; ``own`` = its metadata's."""
        mp = self.for_model(version)
        if mp is None:
            return own
        for seg in mp.segments:
            if seg.segment.matches(tx):
                return seg.thresholds
        return mp.default or own


NO_POLICY = Policy(0)


def decide_each(
    scores: npt.NDArray[np.floating], thresholds: Sequence[Thresholds]
) -> list[DecisionKind]:
    """decide_many() with one Thresholds per row (segments), same rules (NaN refused)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ScoringError("nan_score", "the model returned NaN; the batch cannot be decided")
    review = np.fromiter((t.review for t in thresholds), dtype=np.float64, count=len(thresholds))
    decline = np.fromiter((t.decline for t in thresholds), dtype=np.float64, count=len(thresholds))
    level = (scores >= review).astype(np.int8) + (scores >= decline)
    kinds = _KINDS
    return [kinds[i] for i in level.tolist()]


def decide_under(
    policy: Policy,
    version: str,
    scores: npt.NDArray[np.floating],
    txs: Sequence[Transaction],
    own: Thresholds,
) -> list[DecisionKind]:
    """The decisions of ``version``'s scores of ``txs`` under ``policy`` (vectorised when the
    policy has no segments for that version)."""
    mp = policy.for_model(version)
    if mp is None or not mp.segments:
        return decide_many(scores, own if mp is None or mp.default is None else mp.default)
    return decide_each(scores, [policy.thresholds(version, tx, own) for tx in txs])


# --------------------------------------------------------------------------------------------
# The policy on the wire (fraudstream/schemas/policy.json).


def _thresholds_obj(t: Thresholds) -> dict[str, float]:
    return {"review": t.review, "decline": t.decline}


def segment_to_obj(s: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.channel is not None:
        out["channel"] = s.channel
    if s.mcc is not None:
        out["mcc"] = sorted(s.mcc)
    if s.currency is not None:
        out["currency"] = s.currency
    if s.amount_min is not None:
        out["amount_min"] = s.amount_min
    if s.amount_max is not None:
        out["amount_max"] = s.amount_max
    return out


def policy_to_obj(p: Policy) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for version, mp in p.models.items():
        entry: dict[str, Any] = _thresholds_obj(mp.default) if mp.default else {}
        if mp.segments:
            entry["segments"] = [
                {"name": s.name, "when": segment_to_obj(s.segment), **_thresholds_obj(s.thresholds)}
                for s in mp.segments
            ]
        models[version] = entry
    return {
        "version": p.version,
        "models": models,
        "updated_at": p.updated_at,
        "note": p.note,
        "schema_version": 1,
    }


def encode_policy(p: Policy) -> bytes:
    return orjson.dumps(policy_to_obj(p))


def _thresholds_of(obj: Mapping[str, Any], where: str) -> Thresholds | None:
    if "review" not in obj and "decline" not in obj:
        return None
    if "review" not in obj or "decline" not in obj:
        raise InvalidMessage("bad_policy", f"{where}: give both review and decline, or neither")
    try:
        return Thresholds(float(obj["review"]), float(obj["decline"]))
    except ConfigError as exc:
        raise InvalidMessage("bad_policy", f"{where}: {exc}") from None


def _segment_of(obj: Mapping[str, Any], where: str) -> Segment:
    mcc = obj.get("mcc")
    seg = Segment(
        channel=obj.get("channel"),
        mcc=None if mcc is None else frozenset(int(m) for m in mcc),
        currency=obj.get("currency"),
        amount_min=None if obj.get("amount_min") is None else float(obj["amount_min"]),
        amount_max=None if obj.get("amount_max") is None else float(obj["amount_max"]),
    )
    lo, hi = seg.amount_min, seg.amount_max
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidMessage(
            "bad_policy", f"{where}: amount_min must be below amount_max (an empty band)"
        )
    return seg


def policy_from_obj(obj: Mapping[str, Any]) -> Policy:
    """A Policy from its schema-valid JSON object; ``InvalidMessage("bad_policy")`` when the
    thresholds are inconsistent."""
    models: dict[str, ModelPolicy] = {}
    for version, entry in obj.get("models", {}).items():
        segments: list[SegmentThresholds] = []
        names: set[str] = set()
        for k, s in enumerate(entry.get("segments", ())):
            where = f"models.{version}.segments[{k}]"
            t = _thresholds_of(s, where)
            if t is None:
                raise InvalidMessage("bad_policy", f"{where}: review and decline are required")
            if s["name"] in names:
                raise InvalidMessage("bad_policy", f"{where}: segment name {s['name']!r} repeats")
            names.add(s["name"])
            segments.append(SegmentThresholds(s["name"], _segment_of(s.get("when", {}), where), t))
        models[version] = ModelPolicy(_thresholds_of(entry, f"models.{version}"), tuple(segments))
    return Policy(
        version=int(obj["version"]),
        models=models,
        updated_at=obj.get("updated_at", ""),
        note=obj.get("note", ""),
    )


def decode_policy(raw: bytes | None, max_bytes: int = 1_000_000) -> Policy:
    return policy_from_obj(load_object(raw, max_bytes, "policy"))
