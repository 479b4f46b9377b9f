"""The report's arithmetic: per-version rates, money, and variant comparisons, card by card.

Every rate is a ratio of per-card sums with a card-level interval (``core.stats``), because
routing assigns whole cards: champion vs challenger compares different cards; a deciding model
vs its shadow compares the same transactions (paired). Each comparison carries how large a
difference its data could detect, and how long until a given one would be detectable.

Which rows count is the ``Window``'s business (decision time, maturity); what an unlabelled
decision means is the label rule: ``exclude`` (only labelled outcomes: what the join counts) or
``genuine`` (a mature decision without a fraud label is genuine: the chargeback convention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fraudstream.core.ledger import Ledger, Window
from fraudstream.core.money import Rates
from fraudstream.core.stats import (
    bootstrap_difference,
    cluster_difference,
    cluster_rate,
    days_to_detect,
    minimum_detectable_difference,
)

LabelRule = Literal["exclude", "genuine"]
Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
MIN_CARDS = 30
MIN_EVENTS = 5

LABEL_RULES: dict[LabelRule, str] = {
    "exclude": "labelled outcomes only (unlabelled decisions are left out)",
    "genuine": "a mature decision without a label as genuine (the chargeback convention)",
}


@dataclass(frozen=True, slots=True)
class Options:
    unlabelled: LabelRule = "exclude"
    rates: Rates | None = None
    bootstrap: int = 0  # card resamples per comparison; 0: the linearised interval only
    seed: int = 0
    alpha: float = 0.05
    power: float = 0.8
    detect_relative: float = 0.10  # the difference to plan for: this share of the champion's


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str  # the cards its denominator counts, for the power line
    scope: Literal["labelled", "decisions"]
    num: Callable[[_Rows], Mask]
    den: Callable[[_Rows], Mask]


@dataclass(frozen=True, slots=True)
class _Rows:
    """Row masks of one evaluation: the label rule applied, the window cut."""

    flagged: Mask
    declined: Mask
    fraud: Mask
    genuine: Mask
    labelled_scope: Mask
    decisions_scope: Mask
    window: Mask


METRICS = (
    Metric("recall", "cards with a fraud", "labelled",
           lambda r: r.flagged & r.fraud, lambda r: r.fraud),
    Metric("fpr", "cards with a genuine transaction", "labelled",
           lambda r: r.flagged & r.genuine, lambda r: r.genuine),
    Metric("precision", "cards with a flagged transaction", "labelled",
           lambda r: r.flagged & r.fraud, lambda r: r.flagged & (r.fraud | r.genuine)),
    Metric("decline_rate", "cards", "decisions",
           lambda r: r.declined, lambda r: np.ones_like(r.declined)),
    Metric("flag_rate", "cards", "decisions",
           lambda r: r.flagged, lambda r: np.ones_like(r.flagged)),
)  # fmt: skip


class _Eval:
    def __init__(self, ledger: Ledger, window: Window, options: Options) -> None:
        self.ledger, self.window, self.options = ledger, window, options
        label = ledger.label.copy()
        in_win = window.mask(ledger)
        in_dec = window.decisions_mask(ledger)
        if options.unlabelled == "genuine":
            # Only where fraud.decisions is complete do we know which decisions got no label.
            label[(label < 0) & in_dec] = 0
            labelled_scope = in_dec & (label >= 0)
        else:
            labelled_scope = in_win & (label >= 0)
        self.rows = _Rows(
            flagged=ledger.decision > 0,
            declined=ledger.decision == 2,
            fraud=label == 1,
            genuine=label == 0,
            labelled_scope=labelled_scope,
            decisions_scope=in_dec,
            window=in_win,
        )
        self.label = label

    # ---------------------------------------------------------------- per card
    def per_card(self, mask: Mask, weights: Floats | None = None) -> Floats:
        led = self.ledger
        w = None if weights is None else weights[mask]
        return np.bincount(led.card[mask], weights=w, minlength=led.cards).astype(np.float64)

    def scope(self, m: Metric) -> Mask:
        return self.rows.labelled_scope if m.scope == "labelled" else self.rows.decisions_scope

    def arrays(self, m: Metric, rows: Mask) -> tuple[Floats, Floats]:
        base = rows & self.scope(m)
        return self.per_card(base & m.num(self.rows)), self.per_card(base & m.den(self.rows))

    def money_arrays(self, rows: Mask, weights: Floats) -> tuple[Floats, Floats]:
        base = rows & self.rows.labelled_scope & self.rows.fraud
        return self.per_card(base & self.rows.flagged, weights), self.per_card(base, weights)

    def converted(self) -> Floats | None:
        rates = self.options.rates
        if rates is None:
            return None
        factor = np.array([rates.rate(c) for c in self.ledger.currencies], dtype=np.float64)
        return self.ledger.amount * factor[self.ledger.currency]


def _rate(y: Floats, x: Floats, *, counts: bool = True) -> dict[str, Any]:
    r = cluster_rate(y, x, counts=counts)
    return {
        "value": r.value,
        "k": r.numerator if not counts else int(r.numerator),
        "n": r.denominator if not counts else int(r.denominator),
        "cards": r.cards,
        "ci95": list(r.ci95),
        "se": r.se,
        "deff": r.deff,
    }


def _sum(mask: Mask, values: Floats) -> float:
    return round(float(values[mask].sum()), 2)


def _version(ev: _Eval, g: int) -> dict[str, Any]:
    led, rows = ev.ledger, ev.rows
    version, variant = led.groups[g]
    mine = led.group == g
    lab = mine & rows.labelled_scope
    dec = mine & rows.decisions_scope
    flagged, fraud, genuine = rows.flagged, rows.fraud, rows.genuine
    counts = {
        "TP": int((lab & flagged & fraud).sum()),
        "FP": int((lab & flagged & genuine).sum()),
        "TN": int((lab & ~flagged & genuine).sum()),
        "FN": int((lab & ~flagged & fraud).sum()),
        "labelled": int(lab.sum()),
        "unlabelled": int((mine & rows.window & (ev.label < 0)).sum()),
        "decisions": int(dec.sum()),
        "approve": int((dec & ~flagged).sum()),
        "review": int((dec & flagged & ~rows.declined).sum()),
        "decline": int((dec & rows.declined).sum()),
    }
    out: dict[str, Any] = {
        "model_version": version,
        "variant": variant,
        "cards": int(np.unique(led.card[mine & (rows.window | rows.labelled_scope)]).size),
        "counts": counts,
        "rates": {m.name: _rate(*ev.arrays(m, mine)) for m in METRICS},
        "money": {},
    }
    amount = led.amount
    for ci, cur in enumerate(led.currencies):
        cm = led.currency == ci
        lc, dc = lab & cm, dec & cm
        if not (lc.any() or dc.any()):
            continue
        out["money"][cur] = _money(ev, mine & cm, lc, dc, amount)
    conv = ev.converted()
    if conv is not None and ev.options.rates is not None:
        out["money_converted"] = {
            "currency": ev.options.rates.base,
            **_money(ev, mine, lab, dec, conv),
        }
    return out


def _money(ev: _Eval, rows: Mask, lab: Mask, dec: Mask, amount: Floats) -> dict[str, Any]:
    r = ev.rows
    return {
        "fraud_caught": _sum(lab & r.flagged & r.fraud, amount),
        "fraud_missed": _sum(lab & ~r.flagged & r.fraud, amount),
        "good_flagged": _sum(lab & r.flagged & r.genuine, amount),
        "good_approved": _sum(lab & ~r.flagged & r.genuine, amount),
        "declined": _sum(dec & r.declined, amount),
        "fraud_caught_share": _rate(*ev.money_arrays(rows, amount), counts=False),
    }


# -------------------------------------------------------------------- comparisons


def _few_note(names: tuple[str, str], ya: Floats, xa: Floats, yb: Floats, xb: Floats) -> str | None:
    problems = []
    for name, y, x in ((names[0], ya, xa), (names[1], yb, xb)):
        cards = int((x > 0).sum())
        k, n = float(y.sum()), float(x.sum())
        if cards < MIN_CARDS:
            problems.append(
                f"{name} has {cards} card{'' if cards == 1 else 's'} (fewer than {MIN_CARDS})"
            )
        elif min(k, n - k) < MIN_EVENTS:
            problems.append(f"{name} has only {min(k, n - k):g} in one cell (fewer than 5)")
    return "too few to say: " + "; ".join(problems) if problems else None


def _span_days(ev: _Eval, rows: Mask) -> float:
    t = ev.ledger.decided[rows & (ev.rows.labelled_scope | ev.rows.decisions_scope)]
    return float(t.max() - t.min()) / 86400 if t.size > 1 else 0.0


def _test(
    ev: _Eval,
    metric: str,
    unit: str,
    names: tuple[str, str],
    arrays: tuple[Floats, Floats, Floats, Floats],
    days: float,
    *,
    counts: bool = True,
    paired: bool = False,
) -> dict[str, Any]:
    opt = ev.options
    d = cluster_difference(*arrays)
    note = _few_note(names, *arrays) if counts else None
    if not counts:
        cards = [int((arrays[1] > 0).sum()), int((arrays[3] > 0).sum())]
        if min(cards) < MIN_CARDS:
            note = f"too few to say: {min(cards)} cards with fraud money on one side"
    test: dict[str, Any] = {
        "metric": metric,
        "test": "difference of card-level ratios, cluster-robust (card) standard error",
        names[0]: d.a,
        names[1]: d.b,
        "difference": d.difference,
        "ci95": None if d.ci95 is None else list(d.ci95),
        "z": d.z,
        "p_value": d.p_value,
        "cards": [int((arrays[1] > 0).sum()), int((arrays[3] > 0).sum())],
        "significant": d.p_value < opt.alpha and note is None and d.difference is not None,
        "note": note,
        "power": _power(ev, d.se, d.a, unit, arrays, days, paired),
    }
    if opt.bootstrap > 0:
        b = bootstrap_difference(*arrays, n_boot=opt.bootstrap, seed=opt.seed)
        test["bootstrap"] = asdict(b)
    return test


def _power(
    ev: _Eval,
    se: float | None,
    base: float | None,
    unit: str,
    arrays: tuple[Floats, Floats, Floats, Floats],
    days: float,
    paired: bool,
) -> dict[str, Any] | None:
    opt = ev.options
    if se is None or se <= 0 or days <= 0:
        return None
    cards_a, cards_b = int((arrays[1] > 0).sum()), int((arrays[3] > 0).sum())
    cards = int(((arrays[1] > 0) | (arrays[3] > 0)).sum())
    target = None if not base else abs(base) * opt.detect_relative
    return {
        "alpha": opt.alpha,
        "power": opt.power,
        "days_observed": days,
        "unit": unit,
        "cards_per_day": cards / days,
        # Independent arms: the second's share of the cards (the routing share); paired: None.
        "second_share": None if paired or not cards else cards_b / (cards_a + cards_b),
        "detectable_now": minimum_detectable_difference(se, alpha=opt.alpha, power=opt.power),
        "target": target,
        "target_rule": f"{opt.detect_relative:.0%} of the first's value",
        "days_for_target": None
        if target is None
        else days_to_detect(target, se, days, alpha=opt.alpha, power=opt.power),
    }


def _compare(
    ev: _Eval, a: Mask, b: Mask, names: tuple[str, str], *, paired: bool = False
) -> list[dict[str, Any]]:
    days = _span_days(ev, a | b)
    tests = []
    for m in METRICS:
        arrays = (*ev.arrays(m, a), *ev.arrays(m, b))
        tests.append(_test(ev, m.name, m.unit, names, arrays, days, paired=paired))
    conv = ev.converted()
    if conv is not None and ev.options.rates is not None:
        arrays = (*ev.money_arrays(a, conv), *ev.money_arrays(b, conv))
        name = f"fraud_money_caught_{ev.options.rates.base}"
        unit = "cards with a fraud"
        tests.append(_test(ev, name, unit, names, arrays, days, counts=False, paired=paired))
    else:
        for ci, cur in enumerate(ev.ledger.currencies):
            cm = ev.ledger.currency == ci
            arrays = (*ev.money_arrays(a & cm, ev.ledger.amount),
                      *ev.money_arrays(b & cm, ev.ledger.amount))  # fmt: skip
            if arrays[1].any() and arrays[3].any():
                name = f"fraud_money_caught_{cur}"
                tests.append(
                    _test(ev, name, "cards with a fraud", names, arrays, days, counts=False)
                )
    return tests


def _pairs(ev: _Eval) -> list[tuple[int, int]]:
    """(deciding group, shadow group) pairs that share transactions."""
    led = ev.ledger
    deciding = np.array([v != "shadow" for _, v in led.groups], dtype=bool)
    decider_of_tx = np.full(int(led.tx.max()) + 1 if len(led) else 0, -1, dtype=np.int64)
    dmask = deciding[led.group]
    decider_of_tx[led.tx[dmask]] = led.group[dmask]
    smask = ~dmask
    pair_codes = np.unique(
        np.stack([decider_of_tx[led.tx[smask]], led.group[smask].astype(np.int64)]), axis=1
    )
    pairs = {(int(u), int(v)) for u, v in pair_codes.T}
    return sorted((u, v) for u, v in pairs if u >= 0)


def summarise(ledger: Ledger, window: Window, options: Options | None = None) -> dict[str, Any]:
    """Everything ``fraudstream report`` prints, as plain JSON-able data."""
    opt = options or Options()
    if opt.rates is not None:
        opt.rates.check_covers(ledger.currencies)
    ev = _Eval(ledger, window, opt)
    order = sorted(range(len(ledger.groups)), key=lambda g: ledger.groups[g])
    versions = [_version(ev, g) for g in order]
    versions = [v for v in versions if v["counts"]["labelled"] or v["counts"]["decisions"]]

    comparisons = []
    groups = ledger.groups
    champions = [g for g in order if groups[g][1] == "champion"]
    challengers = [g for g in order if groups[g][1] == "challenger"]
    for a in champions:
        for b in challengers:
            comparisons.append(
                {
                    "champion": groups[a][0],
                    "challenger": groups[b][0],
                    "kind": "independent samples (different cards)",
                    "tests": _compare(
                        ev, ledger.group == a, ledger.group == b, ("champion", "challenger")
                    ),
                }
            )
    for u, v in _pairs(ev):
        shared = np.zeros(int(ledger.tx.max()) + 1, dtype=bool)
        shadow_rows = ledger.group == v
        decider_rows = ledger.group == u
        shared[ledger.tx[shadow_rows]] = True
        decider_rows &= shared[ledger.tx]
        mine = np.zeros_like(shared)
        mine[ledger.tx[decider_rows]] = True
        comparisons.append(
            {
                "decider": groups[u][0],
                "decider_variant": groups[u][1],
                "shadow": groups[v][0],
                "kind": "paired (the same transactions)",
                "tests": _compare(
                    ev,
                    decider_rows,
                    shadow_rows & mine[ledger.tx],
                    ("decider", "shadow"),
                    paired=True,
                ),
            }
        )
    lab = ev.rows.labelled_scope
    return {
        "window": window.to_dict(),
        "alpha": opt.alpha,
        "label_rule": opt.unlabelled,
        "label_rule_means": LABEL_RULES[opt.unlabelled],
        "rows": {
            "read": len(ledger),
            "in_window": int(ev.rows.window.sum()),
            "labelled": int(lab.sum()),
            "undated": int((~np.isfinite(ledger.decided)).sum()),
            "from_outcomes_only": int((~ledger.from_decisions).sum()),
        },
        "money_base": None if opt.rates is None else opt.rates.base,
        "versions": versions,
        "comparisons": comparisons,
        "transactions_labelled": int(np.unique(ledger.tx[lab]).size),
    }
