"""`fraudstream report`: per-version outcomes, money and champion vs challenger, card by card.

Reads ``fraud.outcomes`` (the last outcome per transaction, version and role is the current one,
so a reversed label counts once, with its final value) and ``fraud.decisions`` from ``--since``;
the arithmetic is ``core.evaluation.summarise`` (pure), the text layout is ``render``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fraudstream.core.evaluation import Options, summarise
from fraudstream.core.ledger import (
    Ledger,
    human_duration,
    label_delays,
    make_window,
    parse_when,
)
from fraudstream.settings import Settings


@dataclass(frozen=True, slots=True)
class Query:
    """What to count: a decision-time window and the label maturity (None: measured)."""

    since: str | None = None
    until: str | None = None
    maturity_days: float | None = None


def build(settings: Settings, query: Query, options: Options | None = None) -> dict[str, Any]:
    from fraudstream.kafka.history import load_latest_outcomes, read_rows

    now = time.time()
    since = None if query.since is None else parse_when(query.since, now)
    until = None if query.until is None else parse_when(query.until, now)
    outcomes = load_latest_outcomes(settings)
    # The window first (its maturity comes from the outcomes): only its decisions are read.
    window = make_window(
        label_delays(outcomes.values()),
        now=now,
        since=since,
        until=until,
        maturity_days=query.maturity_days,
    )
    rows, reader = read_rows(settings, outcomes, window.since, window.end)
    ledger = Ledger.of(rows)
    window = replace(window, decisions_from=reader.complete_from)
    summary = summarise(ledger, window, options)
    summary["rows"]["undecodable_decisions"] = reader.skipped
    return summary


def render_report(settings: Settings) -> str:
    return render(build(settings, Query()))


# -------------------------------------------------------------------------------- text


def _pct(x: float | None) -> str:
    if x is None:
        return "n/a"
    v = 100 * x
    return f"{v:.2f}%" if abs(v) < 10 else f"{v:.1f}%"


def _ci(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return f"{'n/a':22s}"
    lo, hi = r["ci95"]
    return f"{_pct(r['value'])} [{_pct(lo)[:-1]}, {_pct(hi)[:-1]}]".ljust(22)


def _pp(x: float) -> str:
    return f"{100 * x:+.2f} pp" if abs(x) < 0.1 else f"{100 * x:+.1f} pp"


def _head(summary: dict[str, Any]) -> list[str]:
    w, rows = summary["window"], summary["rows"]
    since = w["since"] or "the first decision read"
    notes = []
    if w["decisions_complete_from"]:
        notes.append(
            f"fraud.decisions holds every decision only from {w['decisions_complete_from']} "
            "(retention): decision rates count from there"
        )
    if rows["undated"]:
        notes.append(
            f"{rows['undated']} outcomes written before outcomes carried their decision time "
            "are not counted"
        )
    if rows.get("undecodable_decisions"):
        notes.append(f"{rows['undecodable_decisions']} undecodable decision records skipped")
    return [
        f"Decisions from {since} to {w['end']} — mature: decided more than "
        f"{human_duration(w['maturity_days'] * 86400)} ago ({w['maturity_source']}).",
        f"Counting: {summary['label_rule_means']}. Intervals: 95 %, card level (whole cards "
        "are routed; docs/CONTRACT.md, 'Reading the report').",
        *(f"Note: {n}." for n in notes),
    ]


# (header, width, cell) per column after version and variant; a negative width left-aligns.
_Column = tuple[str, int, Callable[[dict[str, Any]], Any]]
_OUTCOME_COLUMNS: list[_Column] = [
    ("TP", 6, lambda v: v["counts"]["TP"]),
    ("FP", 6, lambda v: v["counts"]["FP"]),
    ("TN", 8, lambda v: v["counts"]["TN"]),
    ("FN", 6, lambda v: v["counts"]["FN"]),
    (" recall", -23, lambda v: " " + _ci(v["rates"]["recall"])),
    ("FPR", -22, lambda v: _ci(v["rates"]["fpr"])),
    ("precision", -22, lambda v: _ci(v["rates"]["precision"])),
]
_DECISION_COLUMNS: list[_Column] = [
    ("cards", 7, lambda v: v["cards"]),
    ("decisions", 9, lambda v: v["counts"]["decisions"]),
    ("unlabelled", 10, lambda v: v["counts"]["unlabelled"]),
    ("review", 7, lambda v: v["counts"]["review"]),
    ("decline", 7, lambda v: v["counts"]["decline"]),
    (" decline rate", -23, lambda v: " " + _ci(v["rates"]["decline_rate"])),
    ("flag rate", -22, lambda v: _ci(v["rates"]["flag_rate"])),
]


def _table(versions: list[dict[str, Any]], columns: list[_Column]) -> list[str]:
    def line(first: str, second: str, cells: list[Any]) -> str:
        parts = [f"{first:16s}", f"{second:10s}"]
        for cell, (_, width, _) in zip(cells, columns, strict=True):
            parts.append(f"{cell!s:>{width}}" if width > 0 else f"{cell!s:<{-width}}")
        return " ".join(parts).rstrip()

    lines = ["", line("version", "variant", [h for h, _, _ in columns])]
    for v in versions:
        lines.append(line(v["model_version"], v["variant"], [f(v) for _, _, f in columns]))
    return lines


def _tables(versions: list[dict[str, Any]]) -> list[str]:
    return _table(versions, _OUTCOME_COLUMNS) + _table(versions, _DECISION_COLUMNS)


def _money_lines(versions: list[dict[str, Any]]) -> list[str]:
    """One line per currency and version, the largest fraud volume first; never a cross-currency
    total (with --rates, an "all in <base>" block follows)."""
    blocks: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for v in versions:
        for cur, m in v["money"].items():
            blocks.setdefault(cur, []).append((v, m))
        if "money_converted" in v:
            conv = v["money_converted"]
            blocks.setdefault(f"all in {conv['currency']}", []).append((v, conv))

    def volume(item: tuple[str, list[tuple[dict[str, Any], dict[str, Any]]]]) -> tuple[int, float]:
        cur, entries = item
        total = sum(m["fraud_caught"] + m["fraud_missed"] + m["good_flagged"] for _, m in entries)
        return (cur.startswith("all in"), -total)

    lines = [
        "",
        "Money of labelled outcomes, each currency on its own (declined: all decisions):",
        f"{'currency':10s} {'version':16s} {'variant':10s} {'fraud caught':>14s} "
        f"{'of fraud':>14s}  {'share caught':22s} {'genuine flagged':>15s} {'declined':>14s}",
    ]
    for cur, entries in sorted(blocks.items(), key=volume):
        for v, m in entries:
            lines.append(
                f"{cur:10s} {v['model_version']:16s} {v['variant']:10s} "
                f"{m['fraud_caught']:14,.2f} {m['fraud_caught'] + m['fraud_missed']:14,.2f}  "
                f"{_ci(m['fraud_caught_share'])} {m['good_flagged']:15,.2f} "
                f"{m['declined']:14,.2f}"
            )
    return lines


def _per(days: float) -> tuple[str, float]:
    """A time unit the observed span supports: rates of a short run are not 'a day'."""
    if days >= 2:
        return "a day", 1.0
    if days * 24 >= 2:
        return "an hour", 1 / 24
    return "a minute", 1 / 1440


def _power_line(t: dict[str, Any], names: tuple[str, str]) -> str | None:
    pw = t.get("power")
    if not pw:
        return None
    text = f"detectable now: {_pp(pw['detectable_now']).lstrip('+')} at {pw['power']:.0%} power"
    if pw["days_for_target"] is not None:
        share = pw["second_share"]
        per, per_days = _per(pw["days_observed"])
        text += (
            f"; {_pp(pw['target']).lstrip('+')} ({pw['target_rule'].replace('first', names[0])})"
            f" in about {human_duration(pw['days_for_target'] * 86400)} at "
            f"{pw['cards_per_day'] * per_days:,.0f} {pw['unit']} {per}"
            + ("" if share is None else f" ({share:.0%} {names[1]})")
        )
    return text


def _comparison_lines(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for comp in summary["comparisons"]:
        if "champion" in comp:
            names = ("champion", "challenger")
            who = f"{comp['champion']} (champion) vs {comp['challenger']} (challenger)"
        else:
            names = ("decider", "shadow")
            who = (
                f"{comp['decider']} ({comp['decider_variant']}, deciding) vs "
                f"{comp['shadow']} (shadow)"
            )
        lines += ["", f"{who} — {comp['kind']}"]
        money_tests = 0
        for t in comp["tests"]:
            if t["metric"].startswith("fraud_money_caught") and summary["money_base"] is None:
                money_tests += 1
                continue
            if t["difference"] is None:
                lines.append(f"  {t['metric']:24s} n/a (no data on one side)")
                continue
            lo, hi = t["ci95"]
            verdict = "significant" if t["significant"] else "not significant"
            note = f" — {t['note']}" if t["note"] else ""
            lines.append(
                f"  {t['metric']:24s} {_pct(t[names[0]])} → {_pct(t[names[1]])}: "
                f"{_pp(t['difference'])} [{_pp(lo)}, {_pp(hi)}], p={t['p_value']:.3g}, "
                f"{verdict} at {summary.get('alpha', 0.05)}{note}"
            )
            power = _power_line(t, names)
            if power:
                lines.append(f"  {'':24s} {power}")
        if money_tests:
            lines.append(
                f"  (fraud money caught is compared per currency in --json ({money_tests}); "
                "give --rates FILE to compare it in one currency)"
            )
    return lines


def render(summary: dict[str, Any]) -> str:
    lines = _head(summary)
    versions = summary["versions"]
    if not versions:
        rows = summary["rows"]
        lines += [
            "",
            "(no mature decisions or labelled outcomes in this window yet: "
            f"{rows['read']} rows read, {rows['in_window']} in the window; try a wider "
            "--since/--until or a shorter --maturity-days)",
        ]
        return "\n".join(lines)
    lines += _tables(versions)
    lines += _money_lines(versions)
    lines += _comparison_lines(summary)
    return "\n".join(lines)
