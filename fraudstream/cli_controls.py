"""``fraudstream policy …`` and ``fraudstream rules …``: the fraud team's controls, changed live
through the control topic. Every change is a new version; workers apply it within seconds and
record it in each decision."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fraudstream.cli_options import EXISTING_FILE, file_option
from fraudstream.core.policy import (
    ANY_MODEL,
    ModelPolicy,
    Policy,
    Segment,
    SegmentThresholds,
    Thresholds,
    decode_policy,
    policy_to_obj,
    segment_to_obj,
)
from fraudstream.core.rules import (
    AmountRule,
    ListRule,
    Rule,
    RuleSet,
    VelocityRule,
    card_entries,
    decode_rules,
    rules_to_obj,
    with_card_digests,
)
from fraudstream.errors import ConfigError, InvalidMessage
from fraudstream.settings import get_settings


def _now() -> str:
    from fraudstream.core.messages import utc_now_iso

    return utc_now_iso()


def _controls() -> Any:
    from fraudstream.kafka.control import latest_controls

    return latest_controls(get_settings())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise click.BadParameter(f"{path} must hold a JSON object")
    obj.setdefault("version", 1)
    return obj


def read_policy_file(path: Path) -> Policy:
    """A policy document (``policy show --json``, ``policy suggest --out``), checked as every
    worker checks it; its version as written (``set`` numbers it anew)."""
    try:
        return decode_policy(json.dumps(_read_json(path)).encode())
    except InvalidMessage as exc:
        raise click.BadParameter(f"{path} is not a valid policy: {exc.message}") from None


def read_rules_file(path: Path) -> RuleSet:
    """A rules document; card ids in card lists are hashed here, on this machine."""
    try:
        return decode_rules(json.dumps(with_card_digests(_read_json(path))).encode())
    except InvalidMessage as exc:
        raise click.BadParameter(f"{path} is not a valid rule set: {exc.message}") from None


def _check_models(versions: list[str]) -> None:
    from fraudstream.core.registry import list_versions

    known = {m.version for m in list_versions(get_settings().models_dir)}
    unknown = [v for v in versions if v != ANY_MODEL and v not in known]
    if unknown:
        raise click.BadParameter(
            f"model version(s) {', '.join(unknown)} are not in {get_settings().models_dir} "
            f"(known: {', '.join(sorted(known)) or 'none'}; `*` means every version)"
        )


# --- policy ----------------------------------------------------------------------------------
@click.group()
def policy() -> None:
    """The decision policy: thresholds per model version and segment, apart from the models.

    Where the policy says nothing, a model decides at the thresholds it was shipped with.

    \b
      fraudstream policy show
      fraudstream policy set --model champion-v1 --review 0.35 --decline 0.9
      fraudstream policy set --model champion-v1 --segment ecom-large --channel ecom \\
          --amount-min 500 --review 0.2 --decline 0.7
      fraudstream policy suggest outcomes.parquet --cost-review 5 --cost-decline-good 25 \\
          --amount-bands 50,500 --out policy.json
      fraudstream policy set --file policy.json --note "from the November export"
      fraudstream policy history
    """


def _describe_policy(p: Policy) -> str:
    if p.version == 0:
        return "no policy published: every model decides at its own thresholds (models list)"
    lines = [f"policy version {p.version}  {p.updated_at}  {p.note}".rstrip()]
    if not p.models:
        lines.append("  (no entries: every model decides at its own thresholds)")
    for version, mp in p.models.items():
        own = (
            f"review>={mp.default.review:.4f} decline>={mp.default.decline:.4f}"
            if mp.default
            else "the model's own thresholds"
        )
        lines.append(f"  {version}: {own}")
        for s in mp.segments:
            when = json.dumps(segment_to_obj(s.segment))
            lines.append(
                f"    {s.name:18s} {when:40s} review>={s.thresholds.review:.4f} "
                f"decline>={s.thresholds.decline:.4f}"
            )
    return "\n".join(lines)


def _publish_policy(p: Policy) -> None:
    from fraudstream.kafka.control import publish_policy

    current = _controls().policy
    new = dataclasses.replace(p, version=current.version + 1, updated_at=_now())
    publish_policy(get_settings(), new)
    click.echo(_describe_policy(new))
    click.echo(f"published: workers decide under policy {new.version} within seconds")


@policy.command("set")
@click.option("--file", "path", type=EXISTING_FILE)
@click.option("--model", default=None, help="Model version the thresholds are for (* = any).")
@click.option("--review", type=click.FloatRange(0, 1), default=None)
@click.option("--decline", type=click.FloatRange(0, 1), default=None)
@click.option("--segment", default=None, help="Name of a segment of --model to add or replace.")
@click.option("--channel", type=click.Choice(["pos", "ecom", "atm", "moto"]), default=None)
@click.option("--mcc", type=int, multiple=True, help="Merchant category code (repeatable).")
@click.option("--currency", default=None, help="Only transactions in this currency.")
@click.option("--amount-min", type=float, default=None, help="Amount from (inclusive).")
@click.option("--amount-max", type=float, default=None, help="Amount up to (exclusive).")
@click.option("--remove", is_flag=True, help="Remove --model's entry (or its --segment).")
@click.option("--clear", is_flag=True, help="Publish an empty policy: models' own thresholds.")
@click.option("--note", default="", help="Why: recorded with the version.")
def policy_set(
    path: Path | None,
    model: str | None,
    review: float | None,
    decline: float | None,
    segment: str | None,
    channel: str | None,
    mcc: tuple[int, ...],
    currency: str | None,
    amount_min: float | None,
    amount_max: float | None,
    remove: bool,
    clear: bool,
    note: str,
) -> None:
    """Publish a new policy version: a whole file, or one change to the policy in force."""
    if path is not None:
        new = read_policy_file(path)  # numbered when published
        _check_models(list(new.models))
        _publish_policy(dataclasses.replace(new, note=note or new.note))
        return
    if clear:
        _publish_policy(Policy(1, {}, note=note))
        return
    if model is None:
        raise click.UsageError("give --file, --clear, or --model with what to change")
    _check_models([model])
    current = _controls().policy
    models = dict(current.models)
    entry = models.get(model, ModelPolicy())
    if remove:
        if segment is None:
            models.pop(model, None)
        else:
            models[model] = dataclasses.replace(
                entry, segments=tuple(s for s in entry.segments if s.name != segment)
            )
        _publish_policy(dataclasses.replace(current, models=models, note=note))
        return
    if review is None or decline is None:
        raise click.UsageError("give both --review and --decline")
    try:
        thresholds = Thresholds(review, decline)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if segment is None:
        entry = dataclasses.replace(entry, default=thresholds)
    else:
        seg = Segment(
            channel=channel,
            mcc=frozenset(mcc) if mcc else None,
            currency=currency,
            amount_min=amount_min,
            amount_max=amount_max,
        )
        kept = [s for s in entry.segments if s.name != segment]
        entry = dataclasses.replace(
            entry, segments=(*kept, SegmentThresholds(segment, seg, thresholds))
        )
    models[model] = entry
    _publish_policy(dataclasses.replace(current, models=models, note=note))


@policy.command("suggest")
@click.argument("path", type=EXISTING_FILE)
@click.option("--cost-review", type=float, default=None, help="Cost of reviewing one.")
@click.option(
    "--cost-decline-good", type=float, default=None, help="Cost of declining a genuine one."
)
@click.option(
    "--review-rate",
    type=float,
    default=0.01,
    show_default=True,
    help="Without costs: share flagged.",
)
@click.option(
    "--decline-rate",
    type=float,
    default=0.002,
    show_default=True,
    help="Without costs: share declined.",
)
@click.option("--amount-bands", default="", help="Amount band edges, e.g. 50,500 (segments).")
@click.option(
    "--by-channel", is_flag=True, help="One segment per channel (needs a channel column)."
)
@click.option(
    "--min-frauds",
    type=int,
    default=20,
    show_default=True,
    help="Fewer in a segment: it keeps the version's thresholds.",
)
@click.option(
    "--unlabelled", type=click.Choice(["exclude", "genuine"]), default="exclude", show_default=True
)
@file_option(
    "--rates", "rates_file", 'Fraud losses in one currency: {"base": "EUR", "rates": {...}}.'
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the policy JSON here (for policy set --file).",
)
@click.option("--publish", is_flag=True, help="Publish it as the next version right away.")
def policy_suggest(
    path: Path,
    cost_review: float | None,
    cost_decline_good: float | None,
    review_rate: float,
    decline_rate: float,
    amount_bands: str,
    by_channel: bool,
    min_frauds: int,
    unlabelled: str,
    rates_file: Path | None,
    out: Path | None,
    publish: bool,
) -> None:
    """Thresholds from PATH: scored, labelled rows (`outcomes export`, a backtest), per model
    version and segment, by least cost (--cost-review and --cost-decline-good; fraud loss =
    amount) or by flag rates. Judge them on a period after the one they were chosen on."""
    from fraudstream.core.money import load_rates
    from fraudstream.core.thresholds import Costs
    from fraudstream.suggest import read_rows, render, suggest_from_rows

    if (cost_review is None) != (cost_decline_good is None):
        raise click.UsageError("give both --cost-review and --cost-decline-good, or neither")
    costs = None if cost_review is None else Costs(cost_review, cost_decline_good or 0.0)
    try:
        edges = tuple(float(x) for x in amount_bands.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            f"--amount-bands {amount_bands!r}: numbers separated by commas"
        ) from None
    rates = (
        None
        if rates_file is None
        else load_rates(rates_file.read_text(encoding="utf-8"), str(rates_file))
    )
    how = (
        f"least cost (review {cost_review:g}, declined genuine {cost_decline_good:g})"
        if costs
        else f"flag rates (review {review_rate:g}, decline {decline_rate:g})"
    )
    sug = suggest_from_rows(
        read_rows(path),
        costs=costs,
        review_rate=review_rate,
        decline_rate=decline_rate,
        band_edges=edges,
        by_channel=by_channel,
        min_frauds=min_frauds,
        unlabelled=unlabelled,  # type: ignore[arg-type]
        rates=rates,
        note=f"suggested from {path.name} by {how}",
    )
    click.echo(render(sug, costs))
    if out is not None:
        out.write_text(json.dumps(policy_to_obj(sug.policy), indent=2) + "\n", encoding="utf-8")
        click.echo(f"written: {out} (publish with `fraudstream policy set --file {out}`)")
    if publish:
        _check_models(list(sug.policy.models))
        _publish_policy(sug.policy)


# --- rules -----------------------------------------------------------------------------------
@click.group()
def rules() -> None:
    """Rules beside the model: block/allow lists and hard limits, with priority over the score.

    Card ids are never stored or shown: card lists hold sha256 digests (hashed here).

    \b
      fraudstream rules list-add stolen-cards --field card --action decline CARD_ID ...
      fraudstream rules list-add trusted --field merchant --action approve m-123
      fraudstream rules limit big-ticket --amount-max 5000 --currency EUR --action review
      fraudstream rules limit burst --window 1h --max-count 10
      fraudstream rules remove burst
      fraudstream rules set rules.json
      fraudstream rules show
      fraudstream rules history
    """


def _describe_rule(r: Rule) -> str:
    if isinstance(r, ListRule):
        kind = f"list {r.field}: {len(r.values)} entr{'y' if len(r.values) == 1 else 'ies'}"
        if r.field != "card":
            shown = ", ".join(sorted(r.values)[:5])
            kind += f" ({shown}{', …' if len(r.values) > 5 else ''})"
    elif isinstance(r, AmountRule):
        kind = f"amount above {r.max:,.2f}" + (f" {r.currency}" if r.currency else "")
    else:
        parts = []
        if r.max_count is not None:
            parts.append(f"more than {r.max_count} transactions")
        if r.max_amount is not None:
            parts.append(f"more than {r.max_amount:,.2f} spent")
        kind = f"velocity {r.window}: " + " or ".join(parts)
    return f"  {r.id:20s} {r.action:8s} {kind}"


def _describe_rules(rs: RuleSet) -> str:
    if rs.version == 0:
        return "no rules published: the models decide alone"
    head = f"rules version {rs.version}  {rs.updated_at}  {rs.note}".rstrip()
    return "\n".join(
        [head, *(_describe_rule(r) for r in rs.rules)] if rs.rules else [head, "  (none)"]
    )


def _publish_rules(rs: RuleSet) -> None:
    from fraudstream.kafka.control import publish_rules

    current = _controls().rules
    new = dataclasses.replace(rs, version=current.version + 1, updated_at=_now())
    publish_rules(get_settings(), new)
    click.echo(_describe_rules(new))
    click.echo(f"published: workers apply rules version {new.version} within seconds")


@rules.command("set")
@click.argument("path", type=EXISTING_FILE)
@click.option("--note", default="", help="Why: recorded with the version.")
def rules_set(path: Path, note: str) -> None:
    """Publish the rule set in PATH (JSON, fraudstream/schemas/rules.json) as the next version;
    card ids in card lists are hashed before anything leaves this machine."""
    new = read_rules_file(path)  # numbered when published
    _publish_rules(dataclasses.replace(new, note=note or new.note))


def _replace_rule(rule: Rule, note: str) -> None:
    current = _controls().rules
    kept = [r for r in current.rules if r.id != rule.id]
    at = next((i for i, r in enumerate(current.rules) if r.id == rule.id), len(kept))
    kept.insert(at, rule)
    _publish_rules(dataclasses.replace(current, rules=tuple(kept), note=note))


@rules.command("list-add")
@click.argument("rule_id")
@click.argument("values", nargs=-1, required=True)
@click.option("--field", type=click.Choice(["card", "merchant", "device"]), required=True)
@click.option(
    "--action",
    type=click.Choice(["decline", "review", "approve"]),
    default="decline",
    show_default=True,
)
@click.option("--note", default="")
def rules_list_add(
    rule_id: str, values: tuple[str, ...], field: str, action: str, note: str
) -> None:
    """Add VALUES to list rule RULE_ID (created when new; cards are hashed)."""
    current = next((r for r in _controls().rules.rules if r.id == rule_id), None)
    old: frozenset[str] = frozenset()
    if isinstance(current, ListRule):
        if current.field != field:
            raise click.BadParameter(f"rule {rule_id!r} is a {current.field} list, not {field}")
        old = current.values
    elif current is not None:
        raise click.BadParameter(f"rule {rule_id!r} exists and is not a list; remove it first")
    new = frozenset(card_entries(values) if field == "card" else values)
    _replace_rule(ListRule(rule_id, field, old | new, action), note)  # type: ignore[arg-type]


@rules.command("limit")
@click.argument("rule_id")
@click.option("--amount-max", type=float, default=None, help="Hard amount limit.")
@click.option("--currency", default=None, help="With --amount-max: only this currency.")
@click.option(
    "--window", type=click.Choice(["1h", "24h", "7d"]), default=None, help="Velocity window."
)
@click.option("--max-count", type=int, default=None, help="Velocity: transactions in the window.")
@click.option("--max-amount", type=float, default=None, help="Velocity: amount in the window.")
@click.option(
    "--action",
    type=click.Choice(["decline", "review", "approve"]),
    default="decline",
    show_default=True,
)
@click.option("--note", default="")
def rules_limit(
    rule_id: str,
    amount_max: float | None,
    currency: str | None,
    window: str | None,
    max_count: int | None,
    max_amount: float | None,
    action: str,
    note: str,
) -> None:
    """Add or replace hard limit RULE_ID: an amount limit, or a card velocity limit."""
    rule: Rule
    if amount_max is not None:
        rule = AmountRule(rule_id, amount_max, currency, action)  # type: ignore[arg-type]
    elif window is not None and (max_count is not None or max_amount is not None):
        rule = VelocityRule(rule_id, window, max_count, max_amount, action)  # type: ignore[arg-type]
    else:
        raise click.UsageError("give --amount-max, or --window with --max-count/--max-amount")
    _replace_rule(rule, note)


@rules.command("remove")
@click.argument("rule_id")
@click.option("--note", default="")
def rules_remove(rule_id: str, note: str) -> None:
    """Remove rule RULE_ID (a new version without it)."""
    current = _controls().rules
    if rule_id not in current.ids:
        raise click.BadParameter(
            f"no rule {rule_id!r} in force (rules: {', '.join(current.ids) or 'none'})"
        )
    _publish_rules(
        dataclasses.replace(
            current, rules=tuple(r for r in current.rules if r.id != rule_id), note=note
        )
    )


# --- show and history, the same for both ------------------------------------------------------
def _history(name: str) -> list[Any]:
    from fraudstream.kafka import control  # confluent-kafka: only when a command runs

    return list(getattr(control, name)(get_settings()))


def _from_history(name: str, version: int, what: str) -> Any:
    found = {item.version: item for item in _history(name)}
    if version not in found:
        known = ", ".join(map(str, sorted(found))) or "none"
        raise click.BadParameter(f"no {what} version {version} in history (versions: {known})")
    return found[version]


def _show_and_history(
    group: click.Group,
    pick: Callable[[Any], Any],
    to_obj: Callable[[Any], dict[str, Any]],
    describe: Callable[[Any], str],
    history: str,
    what: str,
) -> None:
    @group.command("show")
    @click.option("--json", "as_json", is_flag=True, help=f"The whole {what} as JSON.")
    @click.option("--version", "version", type=int, default=None, help="An earlier version.")
    def show(as_json: bool, version: int | None) -> None:
        item = pick(_controls()) if version is None else _from_history(history, version, what)
        click.echo(json.dumps(to_obj(item), indent=2) if as_json else describe(item))

    show.help = (
        f"The {what} in force, or --version N from history (--json: a file that "
        "`score --policy/--rules` and `set` take, to replay decisions made under it)."
    )

    @group.command("history")
    def history_cmd() -> None:
        found = _history(history)
        if not found:
            click.echo(f"no {what} was ever published")
        for item in found:
            click.echo(describe(item))

    history_cmd.help = f"Every {what} version published, oldest first."


_show_and_history(
    policy, lambda c: c.policy, policy_to_obj, _describe_policy, "policy_history", "policy"
)
_show_and_history(
    rules, lambda c: c.rules, rules_to_obj, _describe_rules, "rules_history", "rule set"
)
