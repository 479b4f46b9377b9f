"""Rules beside the model: block/allow lists (card, merchant, device) and hard limits (amount, the
card's velocity), versioned and published live on ``fraud.control`` (key ``rules``).

Rules are evaluated in the same engine step as the model and take priority over its score:

* any hit of a ``decline`` rule declines (a block list, a hard limit);
* else any hit of an ``approve`` rule approves (an allow list: trusted merchant, verified card);
* else any hit of a ``review`` rule sends to review at least (a model decline stays a decline);
* else the model's decision stands.

Every hit is named in the decision (``reason_codes``, source ``rule``, ref = the rule id) and
counted per rule in metrics. Velocity limits read the card's own features (``core/features``),
so they are exact to the event like the model's inputs and count the transaction itself.

Card lists never hold card ids in the clear: entries are ``sha256:<hex>`` digests of the card id
(``card_digest``; the CLI hashes what it is given), so a rule set can be shown, logged and kept in
history without exposing a card. Merchant and device ids are shown as given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from fraudstream.core import features
from fraudstream.core.messages import DecisionKind, ReasonCode, Transaction, load_object
from fraudstream.errors import InvalidMessage

Action = Literal["decline", "review", "approve"]
ListField = Literal["card", "merchant", "device"]
Window = Literal["1h", "24h", "7d"]

CARD_DIGEST_PREFIX = "sha256:"
_ACTION_WORD = {"decline": "BLOCK", "approve": "ALLOW", "review": "REVIEW"}
_WINDOW_TEXT = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
_WINDOW_FEATURES = {
    "1h": ("card_count_1h", "card_amount_1h"),
    "24h": ("card_count_24h", "card_amount_24h"),
    "7d": ("card_count_7d", "card_amount_7d"),
}
_INDEX = {name: i for i, name in enumerate(features.FEATURE_NAMES)}


def card_digest(card_id: str) -> str:
    """How a card list names a card: sha256 of its id, never the id itself."""
    return CARD_DIGEST_PREFIX + hashlib.sha256(card_id.encode()).hexdigest()


def is_card_digest(value: str) -> bool:
    hexpart = value.removeprefix(CARD_DIGEST_PREFIX)
    return (
        value.startswith(CARD_DIGEST_PREFIX)
        and len(hexpart) == 64
        and all(c in "0123456789abcdef" for c in hexpart)
    )


@dataclass(frozen=True, slots=True)
class ListRule:
    id: str
    field: ListField
    values: frozenset[str]
    action: Action = "decline"


@dataclass(frozen=True, slots=True)
class AmountRule:
    """Hits when the amount is above ``max`` (in ``currency`` only, when given)."""

    id: str
    max: float
    currency: str | None = None
    action: Action = "decline"


@dataclass(frozen=True, slots=True)
class VelocityRule:
    """Hits when the card's transactions in ``window``, this one included, are more than
    ``max_count`` or add up to more than ``max_amount``."""

    id: str
    window: Window
    max_count: int | None = None
    max_amount: float | None = None
    action: Action = "decline"


Rule = ListRule | AmountRule | VelocityRule


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A versioned set of rules. Version 0 is the state before any was published: no rules."""

    version: int
    rules: tuple[Rule, ...] = ()
    updated_at: str = ""
    note: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)


NO_RULES = RuleSet(0)


@dataclass(frozen=True, slots=True)
class Hit:
    action: Action
    reason: ReasonCode


def _money(value: float, currency: str = "") -> str:
    return f"{value:,.2f} {currency}".strip()


def _list_hit(rule: ListRule, tx: Transaction, card: str | None) -> bool:
    if rule.field == "card":
        return card is not None and card in rule.values
    if rule.field == "merchant":
        return tx.merchant_id in rule.values
    return tx.device_id is not None and tx.device_id in rule.values


def evaluate(rules: RuleSet, tx: Transaction, row: Sequence[float]) -> tuple[Hit, ...]:
    """The rules ``tx`` hits, in rule order; ``row`` is its feature row (``features.step``)."""
    if not rules.rules:
        return ()
    hits: list[Hit] = []
    card: str | None = None
    for rule in rules.rules:
        if isinstance(rule, ListRule):
            if rule.field == "card" and card is None:
                card = card_digest(tx.card_id)
            if _list_hit(rule, tx, card):
                what = "device" if rule.field == "device" else rule.field
                hits.append(
                    Hit(
                        rule.action,
                        ReasonCode(
                            f"RULE_{_ACTION_WORD[rule.action]}_{rule.field.upper()}",
                            f"{what} is on list '{rule.id}' ({rule.action})",
                            "rule",
                            rule.id,
                        ),
                    )
                )
        elif isinstance(rule, AmountRule):
            if (rule.currency is None or tx.currency == rule.currency) and tx.amount > rule.max:
                text = (
                    f"amount {_money(tx.amount, tx.currency)} is over the limit of "
                    f"{_money(rule.max, rule.currency or tx.currency)} ({rule.action})"
                )
                hits.append(
                    Hit(rule.action, ReasonCode("RULE_AMOUNT_LIMIT", text, "rule", rule.id))
                )
        else:
            over = _velocity(rule, tx, row)
            if over is not None:
                hits.append(
                    Hit(rule.action, ReasonCode("RULE_VELOCITY_LIMIT", over, "rule", rule.id))
                )
    return tuple(hits)


def _velocity(rule: VelocityRule, tx: Transaction, row: Sequence[float]) -> str | None:
    count_name, amount_name = _WINDOW_FEATURES[rule.window]
    span = _WINDOW_TEXT[rule.window]
    count = int(row[_INDEX[count_name]]) + 1  # the features count the card's earlier ones
    if rule.max_count is not None and count > rule.max_count:
        return (
            f"card's transaction number {count} within {span}, over the limit of "
            f"{rule.max_count} ({rule.action})"
        )
    spent = float(row[_INDEX[amount_name]]) + tx.amount
    if rule.max_amount is not None and spent > rule.max_amount:
        return (
            f"card spent {_money(spent)} within {span} with this one, over the limit of "
            f"{_money(rule.max_amount)} ({rule.action})"
        )
    return None


def apply(model: DecisionKind, hits: Sequence[Hit]) -> DecisionKind:
    """The decision once the rules have spoken (see the module's precedence)."""
    if not hits:
        return model
    actions = {h.action for h in hits}
    if "decline" in actions:
        return "decline"
    if "approve" in actions:
        return "approve"
    return "decline" if model == "decline" else "review"


# --------------------------------------------------------------------------------------------
# The rule set on the wire (fraudstream/schemas/rules.json).


def rule_to_obj(rule: Rule) -> dict[str, Any]:
    if isinstance(rule, ListRule):
        return {
            "id": rule.id,
            "kind": "list",
            "field": rule.field,
            "values": sorted(rule.values),
            "action": rule.action,
        }
    if isinstance(rule, AmountRule):
        out: dict[str, Any] = {"id": rule.id, "kind": "amount", "max": rule.max}
        if rule.currency is not None:
            out["currency"] = rule.currency
        return {**out, "action": rule.action}
    out = {"id": rule.id, "kind": "velocity", "window": rule.window}
    if rule.max_count is not None:
        out["max_count"] = rule.max_count
    if rule.max_amount is not None:
        out["max_amount"] = rule.max_amount
    return {**out, "action": rule.action}


def rules_to_obj(rs: RuleSet) -> dict[str, Any]:
    return {
        "version": rs.version,
        "rules": [rule_to_obj(r) for r in rs.rules],
        "updated_at": rs.updated_at,
        "note": rs.note,
        "schema_version": 1,
    }


def encode_rules(rs: RuleSet) -> bytes:
    return orjson.dumps(rules_to_obj(rs))


def _rule_of(obj: Mapping[str, Any]) -> Rule:
    kind = obj["kind"]
    action = obj.get("action", "decline")
    rid = obj["id"]
    if kind == "list":
        values = frozenset(obj["values"])
        if obj["field"] == "card":
            bad = [v for v in values if not is_card_digest(v)]
            if bad:
                raise InvalidMessage(
                    "bad_rules",
                    f"rule {rid!r}: card lists hold sha256 digests of card ids "
                    f"({CARD_DIGEST_PREFIX}<64 hex>), never card ids; {len(bad)} entries are "
                    "not (`fraudstream rules set` hashes card ids for you)",
                )
        return ListRule(rid, obj["field"], values, action)
    if kind == "amount":
        return AmountRule(rid, float(obj["max"]), obj.get("currency"), action)
    if obj.get("max_count") is None and obj.get("max_amount") is None:
        raise InvalidMessage("bad_rules", f"rule {rid!r}: give max_count, max_amount or both")
    return VelocityRule(
        rid,
        obj["window"],
        obj.get("max_count"),
        None if obj.get("max_amount") is None else float(obj["max_amount"]),
        action,
    )


def card_entries(values: Iterable[str]) -> list[str]:
    """Card list entries: ids hashed, digests kept."""
    return [v if is_card_digest(v) else card_digest(v) for v in values]


def with_card_digests(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A rule set document whose card lists hold digests: card ids given in the clear (a file
    an analyst wrote) are hashed, digests are kept."""
    out = dict(obj)
    rules = []
    for rule in obj.get("rules", ()):
        if isinstance(rule, Mapping) and rule.get("kind") == "list" and rule.get("field") == "card":
            rules.append({**rule, "values": card_entries(rule.get("values", ()))})
        else:
            rules.append(rule)
    out["rules"] = rules
    return out


def rules_from_obj(obj: Mapping[str, Any]) -> RuleSet:
    """A RuleSet from its schema-valid JSON object; ``InvalidMessage("bad_rules")`` otherwise."""
    rules = tuple(_rule_of(r) for r in obj.get("rules", ()))
    ids = [r.id for r in rules]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise InvalidMessage("bad_rules", f"rule ids must be unique; repeated: {repeated}")
    return RuleSet(int(obj["version"]), rules, obj.get("updated_at", ""), obj.get("note", ""))


def decode_rules(raw: bytes | None, max_bytes: int = 1_000_000) -> RuleSet:
    return rules_from_obj(load_object(raw, max_bytes, "rules"))
