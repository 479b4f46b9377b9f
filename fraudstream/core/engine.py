"""The worker's scoring step, pure: raw records and per-card records in; decisions, scores,
dead letters, duplicates and the changed card records out (``step``), around the decision
proper (``process_batch``: decoded transactions and card records in, results out). The wiring
only hands a batch down once and sends what comes back.

Per card the worker keeps one record: the feature state (``core.features``) and the ids of the
card's transactions seen within the dedup window. A transaction delivered again (an upstream
retry, or a replay after a crash once its decision was written) is recognised there and gets no
second decision. Cards partition the transactions topic, so the record sits next to its events.

For transactions decided through the synchronous API the record also keeps, for the same
window, the decision and a digest of the transaction: a client that repeats a request (a
timeout, a retry) gets the original decision back, and one that reuses an id for another
transaction is told so (``Duplicate.original`` / ``same_body``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import orjson

from fraudstream.core import features
from fraudstream.core import rules as rules_
from fraudstream.core.entity import Lookup, nothing_known
from fraudstream.core.messages import (
    Decision,
    Routing,
    Score,
    Shadow,
    Transaction,
    Variant,
    decode_transaction,
    encode_decision,
    encode_transaction,
)
from fraudstream.core.policy import (
    NO_POLICY,
    Policy,
    Thresholds,
    decide_under,
    top_reasons_rows,
)
from fraudstream.core.reasons import explain_all
from fraudstream.core.records import Record
from fraudstream.core.registry import LoadedModel, ReasonsMethod
from fraudstream.core.routing import assign_many
from fraudstream.core.scoring import nonfinite_rows
from fraudstream.errors import FraudStreamError, InvalidMessage, ScoringError

# A card with more distinct transactions than this inside the dedup window is already extreme;
# the oldest ids are forgotten first so that the record stays small.
MAX_SEEN_PER_CARD = 2048


@dataclass(frozen=True, slots=True)
class ServedModel:
    version: str
    model: LoadedModel
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Serving:
    """What decides right now: the routing in force and the models it names, loaded, the
    decision policy (thresholds) and the rules beside the models."""

    routing: Routing
    models: Mapping[str, ServedModel]
    policy: Policy = NO_POLICY
    rules: rules_.RuleSet = rules_.NO_RULES
    reasons: ReasonsMethod = "path"  # how reasons attribute a score (FRAUD_REASONS_METHOD)

    def __post_init__(self) -> None:
        needed = [self.routing.champion]
        if self.routing.challenger:
            needed.append(self.routing.challenger)
        missing = [v for v in needed if v not in self.models]
        if missing:
            raise ValueError(f"routing names versions that are not loaded: {missing}")


@dataclass(slots=True)
class CardRecord:
    state: features.CardState | None = None
    seen: dict[str, float] = field(default_factory=dict)  # transaction_id -> event ts
    # API-decided transaction_id -> [digest of the transaction, its decision as JSON text]
    replies: dict[str, list[str]] = field(default_factory=dict)


def record_to_bytes(rec: CardRecord) -> bytes:
    obj: dict[str, object] = {
        "f": None if rec.state is None else rec.state.to_obj(),
        "s": rec.seen,
    }
    if rec.replies:
        obj["r"] = rec.replies
    return orjson.dumps(obj)


def record_from_bytes(raw: bytes | None) -> CardRecord:
    if not raw:
        return CardRecord()
    obj = orjson.loads(raw)
    state = obj.get("f")
    return CardRecord(
        state=None if state is None else features.CardState.from_obj(state),
        seen=dict(obj.get("s") or {}),
        replies=dict(obj.get("r") or {}),
    )


def digest(tx: Transaction) -> str:
    """What identifies a transaction's content, whatever the JSON's spelling."""
    return hashlib.sha256(encode_transaction(tx)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Scored:
    tx: Transaction
    decision: Decision
    scores: tuple[Score, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    tx: Transaction
    error: ScoringError


@dataclass(frozen=True, slots=True)
class Duplicate:
    tx: Transaction
    #: For a repeated API request: the original decision (JSON) when the API decided the
    #: original, and whether this request carries the same transaction.
    original: bytes | None = None
    same_body: bool = False


Result = Scored | Rejected | Duplicate


def _remember(rec: CardRecord, tx: Transaction, window_s: float) -> None:
    horizon = tx.ts - window_s
    if rec.seen and (len(rec.seen) >= MAX_SEEN_PER_CARD or min(rec.seen.values()) < horizon):
        kept = {k: t for k, t in rec.seen.items() if t >= horizon}
        if len(kept) >= MAX_SEEN_PER_CARD:
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1])[-(MAX_SEEN_PER_CARD - 1) :])
        rec.seen = kept
        if rec.replies:
            rec.replies = {k: v for k, v in rec.replies.items() if k in kept}
    rec.seen[tx.transaction_id] = tx.ts


def process_batch(
    serving: Serving,
    txs: Sequence[Transaction],
    records: MutableMapping[str, CardRecord],
    *,
    now_iso: str,
    dedup_window_s: float,
    entities: Lookup = nothing_known,
) -> list[Result]:
    """Decide a batch. ``records`` holds the record of every card in the batch (an empty
    ``CardRecord`` for a new card) and is updated in place; results come in input order.
    ``entities`` answers merchant and card-label state (``core.entity``); the worker passes
    ``nothing_known`` until its entity-state follower exists."""
    n = len(txs)
    results: list[Result | None] = [None] * n
    rows: list[list[float]] = []
    row_of: list[int] = []  # input index of each feature row
    row_at: dict[int, list[float]] = {}  # the feature row of an input index, for the rules
    previous: dict[int, tuple[str, features.CardState | None]] = {}

    for i, tx in enumerate(txs):
        rec = records[tx.card_id]
        if tx.transaction_id in rec.seen:
            results[i] = Duplicate(tx)
            continue
        previous[i] = (tx.card_id, rec.state)
        rec.state, vector = features.step(rec.state, tx, entities)
        _remember(rec, tx, dedup_window_s)
        rows.append(vector)
        row_of.append(i)
        row_at[i] = vector

    if rows:
        x = np.asarray(rows, dtype=np.float32)
        bad = nonfinite_rows(x)
        if bad.any():
            for r in np.flatnonzero(bad):
                i = row_of[int(r)]
                tx = txs[i]
                names = [features.FEATURE_NAMES[j] for j in np.flatnonzero(~np.isfinite(x[r]))]
                results[i] = Rejected(
                    tx,
                    ScoringError(
                        "non_finite_feature",
                        f"feature(s) {', '.join(names)} came out NaN or infinite; the "
                        "transaction was not scored",
                    ),
                )
                # A transaction that was not decided must not count in the card's history.
                card_id, old_state = previous[i]
                records[card_id].state = old_state
                records[card_id].seen.pop(tx.transaction_id, None)
            keep = ~bad
            x = x[keep]
            row_of = [i for i, k in zip(row_of, keep, strict=True) if k]
        if row_of:
            scored = _score(
                serving, [txs[i] for i in row_of], x, [row_at[i] for i in row_of], now_iso
            )
            for i, s in zip(row_of, scored, strict=True):
                results[i] = s
    return [r for r in results if r is not None]


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that gets no decision: it goes to the dead-letter topic with this reason."""

    reason: str
    message: str


#: What became of one input record.
Verdict = Scored | Duplicate | Refused
#: A partition's card record by (partition, card_id), or None for a card it has not seen.
CardLookup = Callable[[int, str], "CardRecord | None"]


@dataclass(slots=True)
class Step:
    """One batch, decided: a verdict per input record (in input order) and every card record
    the batch changed, as it is now, by (partition, card_id)."""

    verdicts: list[tuple[Record, Verdict]]
    cards: dict[tuple[int, str], CardRecord]
    retried_singly: bool = False  # the batch failed as a whole and was decided record by record


def step(
    serving: Serving,
    records: Sequence[Record],
    lookup: CardLookup,
    *,
    max_bytes: int,
    now_iso: str,
    dedup_window_s: float,
    entities: Lookup = nothing_known,
) -> Step:
    """Decode, check and decide ``records``; the card records found by ``lookup`` are not
    changed (the changed ones come back, as new objects, in ``Step.cards``).

    A record that cannot be decoded, whose key is not its ``card_id``, or whose features cannot
    be computed is refused with the contract's reason. If deciding the batch raises something
    unexpected, every record is decided alone, and the ones that still fail are refused as
    ``scoring_error``: one poisonous transaction never sinks its batch. A ``FraudStreamError``
    (a model that cannot predict, say) is not bad input: it propagates."""
    verdicts: dict[int, Verdict] = {}
    todo: list[tuple[int, Record, Transaction]] = []
    for i, rec in enumerate(records):
        try:
            tx = decode_transaction(rec.value, max_bytes)
            if rec.key != tx.card_id.encode():
                raise InvalidMessage(
                    "key_mismatch",
                    "the record key must be the transaction's card_id (per-card state is "
                    "partitioned by it); re-publish with key = card_id",
                )
        except InvalidMessage as exc:
            verdicts[i] = Refused(exc.reason, exc.message)
            continue
        except Exception as exc:  # noqa: BLE001 - never lose a record to a surprise
            verdicts[i] = Refused("decode_error", repr(exc))
            continue
        todo.append((i, rec, tx))

    cards: dict[tuple[int, str], CardRecord] = {}
    for _, rec, tx in todo:
        slot = (rec.partition, tx.card_id)
        if slot not in cards:
            found = lookup(*slot)
            cards[slot] = CardRecord() if found is None else _copy(found)
    retried = False
    try:
        results = _decide(serving, todo, cards, now_iso, dedup_window_s, entities)
    except FraudStreamError:
        raise
    except Exception:  # noqa: BLE001 - the batch again, one record at a time
        retried = True
        cards = {slot: _copy(lookup(*slot) or CardRecord()) for slot in cards}
        results = {}
        for item in todo:
            slot = (item[1].partition, item[2].card_id)
            single = {slot: _copy(cards[slot])}
            try:
                results.update(_decide(serving, [item], single, now_iso, dedup_window_s, entities))
            except FraudStreamError:
                raise
            except Exception as exc:  # noqa: BLE001 - dead-lettered with its reason
                results[item[0]] = Refused("scoring_error", repr(exc))
            else:
                cards.update(single)
    verdicts.update(results)
    _replies(todo, verdicts, cards)
    changed = {slot: rec for slot, rec in cards.items() if _changed(rec, lookup(*slot))}
    return Step([(rec, verdicts[i]) for i, rec in enumerate(records)], changed, retried)


def _decide(
    serving: Serving,
    todo: Sequence[tuple[int, Record, Transaction]],
    cards: dict[tuple[int, str], CardRecord],
    now_iso: str,
    dedup_window_s: float,
    entities: Lookup,
) -> dict[int, Verdict]:
    """``process_batch`` over ``todo``, once per partition when one card id shows up in two
    partitions (a producer that does not key by card: each partition keeps its own record)."""
    by_card: dict[str, int] = {}
    split = any(
        by_card.setdefault(tx.card_id, rec.partition) != rec.partition for _, rec, tx in todo
    )
    groups: dict[int | None, list[tuple[int, Record, Transaction]]] = {}
    for item in todo:
        groups.setdefault(item[1].partition if split else None, []).append(item)
    out: dict[int, Verdict] = {}
    for items in groups.values():
        view = {tx.card_id: cards[(rec.partition, tx.card_id)] for _, rec, tx in items}
        txs = [tx for _, _, tx in items]
        results = process_batch(
            serving, txs, view, now_iso=now_iso, dedup_window_s=dedup_window_s, entities=entities
        )
        for (i, rec, tx), result in zip(items, results, strict=True):
            assert result.tx is tx
            cards[(rec.partition, tx.card_id)] = view[tx.card_id]
            out[i] = (
                Refused(result.error.reason, result.error.message)
                if isinstance(result, Rejected)
                else result
            )
    return out


def _replies(
    todo: Sequence[tuple[int, Record, Transaction]],
    verdicts: dict[int, Verdict],
    cards: dict[tuple[int, str], CardRecord],
) -> None:
    """API requests (records not from the log): keep a decision to answer a repeat with, and
    give a repeat the original (in order: a repeat in the same batch finds the first)."""
    for i, rec, tx in todo:
        if rec.from_log:
            continue
        card = cards[(rec.partition, tx.card_id)]
        verdict = verdicts[i]
        if isinstance(verdict, Scored):
            card.replies[tx.transaction_id] = [
                digest(tx),
                encode_decision(verdict.decision).decode(),
            ]
        elif isinstance(verdict, Duplicate):
            kept = card.replies.get(tx.transaction_id)
            if kept is not None:
                verdicts[i] = replace(
                    verdict, original=kept[1].encode(), same_body=kept[0] == digest(tx)
                )


def _changed(rec: CardRecord, before: CardRecord | None) -> bool:
    if before is None:
        return rec.state is not None or bool(rec.seen)
    return rec.state is not before.state or rec.seen != before.seen or rec.replies != before.replies


def _copy(rec: CardRecord) -> CardRecord:
    # The feature state is replaced, never mutated, by features.step; the maps are mutated.
    return CardRecord(rec.state, dict(rec.seen), dict(rec.replies))


def _score(
    serving: Serving,
    txs: list[Transaction],
    x: np.ndarray,
    rows: list[list[float]],
    now_iso: str,
) -> list[Scored]:
    """Score, decide under the policy, then let the rules speak (``core.rules.apply``)."""
    routing = serving.routing
    n = len(txs)
    if routing.challenger and routing.challenger_share > 0:
        variants: list[Variant] = assign_many(
            [t.card_id for t in txs], routing.salt, routing.challenger_share
        )
    else:
        variants = ["champion"] * n
    challenger = routing.challenger
    decider = [
        routing.champion if v == "champion" or challenger is None else challenger for v in variants
    ]
    shadow: list[str | None] = [None] * n
    if routing.shadow and challenger:
        shadow = [challenger if d == routing.champion else routing.champion for d in decider]

    # One model call per version over every row it scores (deciding or shadow).
    per_version: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for version in {*decider, *(s for s in shadow if s)}:
        idx = np.fromiter(
            (i for i in range(n) if decider[i] == version or shadow[i] == version), dtype=np.intp
        )
        per_version[version] = (idx, serving.models[version].model.predict(x[idx]))

    score_of: dict[tuple[int, str], float] = {}
    decision_of: dict[tuple[int, str], str] = {}
    policy = serving.policy
    for version, (idx, probs) in per_version.items():
        kinds = decide_under(
            policy,
            version,
            probs,
            [txs[i] for i in idx.tolist()],
            serving.models[version].thresholds,
        )
        for j, i in enumerate(idx.tolist()):
            score_of[(i, version)] = float(probs[j])
            decision_of[(i, version)] = kinds[j]

    # Reasons only for flagged transactions, one contributions call per deciding version.
    reasons: dict[int, tuple] = {}
    for version in set(decider):
        flagged = [
            i for i in range(n) if decider[i] == version and decision_of[(i, version)] != "approve"
        ]
        if not flagged:
            continue
        served = serving.models[version]
        flagged_x = x[flagged]
        contribs = served.model.contributions(flagged_x, serving.reasons)
        names = served.model.meta.feature_names
        reasons.update(zip(flagged, top_reasons_rows(contribs, names, flagged_x), strict=True))

    ruleset = serving.rules
    out: list[Scored] = []
    for i, tx in enumerate(txs):
        version = decider[i]
        other = shadow[i]
        shadow_info = (
            Shadow(other, score_of[(i, other)], decision_of[(i, other)])  # type: ignore[arg-type]
            if other
            else None
        )
        kind = decision_of[(i, version)]
        hits = rules_.evaluate(ruleset, tx, rows[i])
        decision = Decision(
            transaction_id=tx.transaction_id,
            card_id=tx.card_id,
            decision=rules_.apply(kind, hits),  # type: ignore[arg-type]
            score=score_of[(i, version)],
            model_version=version,
            variant=variants[i] if challenger else "champion",
            reasons=reasons.get(i, ()),
            decided_at=now_iso,
            amount=tx.amount,
            currency=tx.currency,
            shadow=shadow_info,
            merchant_id=tx.merchant_id,
            event_time=tx.event_time,
            policy_version=policy.version,
            rules_version=ruleset.version,
            reason_codes=tuple(h.reason for h in hits)
            + explain_all(reasons.get(i, ()), tx.currency),
        )
        scores = [
            Score(
                transaction_id=tx.transaction_id,
                model_version=version,
                role=decision.variant,
                score=decision.score,
                scored_at=now_iso,
                decision=kind,  # type: ignore[arg-type] # the model's own, before the rules
            )
        ]
        if other:
            scores.append(
                Score(
                    transaction_id=tx.transaction_id,
                    model_version=other,
                    role="shadow",
                    score=score_of[(i, other)],
                    scored_at=now_iso,
                    decision=decision_of[(i, other)],  # type: ignore[arg-type]
                )
            )
        out.append(Scored(tx, decision, tuple(scores)))
    return out
