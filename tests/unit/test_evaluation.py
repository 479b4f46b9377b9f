"""The report's arithmetic on hand-made decisions: counts, card-level rates, money per currency,
maturity, the label rule, and the comparisons with their power lines."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from fraudstream.core.evaluation import Options, summarise
from fraudstream.core.ledger import Ledger, join_rows, latest_outcomes, make_window
from fraudstream.core.messages import Decision, Outcome
from fraudstream.core.money import parse_rates
from fraudstream.core.stats import cluster_difference, cluster_rate, minimum_detectable_difference
from fraudstream.errors import ConfigError
from tests.unit.worlds import DAY, NOW, dec, out


def _small() -> tuple[list[Decision], list[Outcome]]:
    d = {
        # champion v1 — card A: TP, FN, TN (EUR); card B: FP, TN, unlabelled (GBP)
        "t1": dec("t1", "A", "v1", "champion", "decline", amount=100),
        "t2": dec("t2", "A", "v1", "champion", "approve", amount=50),
        "t3": dec("t3", "A", "v1", "champion", "approve", amount=20),
        "t4": dec("t4", "B", "v1", "champion", "decline", amount=30, currency="GBP"),
        "t5": dec("t5", "B", "v1", "champion", "approve", amount=10, currency="GBP"),
        "t6": dec("t6", "B", "v1", "champion", "approve", amount=5, currency="GBP"),
        # challenger v2 — card C: TP, TP (EUR); card D: TN, unlabelled decline (USD)
        "t7": dec("t7", "C", "v2", "challenger", "decline", amount=200),
        "t8": dec("t8", "C", "v2", "challenger", "review", amount=10),
        "t9": dec("t9", "D", "v2", "challenger", "approve", amount=40, currency="USD"),
        "t10": dec("t10", "D", "v2", "challenger", "decline", amount=60, currency="USD"),
        # card E: decided half a day ago, its label already in: not mature at 1 day
        "t11": dec("t11", "E", "v2", "challenger", "approve", amount=999, age_days=0.5),
    }
    labels = {"t1": 1, "t2": 1, "t3": 0, "t4": 0, "t5": 0, "t7": 1, "t8": 1, "t9": 0, "t11": 1}
    outs = [out(d[t], bool(f), delay_days=0.1) for t, f in labels.items()]
    return list(d.values()), outs


def _summary(options: Options | None = None, **window: Any) -> dict[str, Any]:
    decisions, outs = _small()
    led = Ledger.of(join_rows(decisions, latest_outcomes(outs)))
    return summarise(led, make_window((), now=NOW, maturity_days=1, **window), options)


def _by(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["model_version"]: v for v in summary["versions"]}


def test_counts_and_rates_of_mature_decisions() -> None:
    s = _summary()
    v1, v2 = _by(s)["v1"], _by(s)["v2"]
    assert v1["counts"] == {
        "TP": 1, "FP": 1, "TN": 2, "FN": 1, "labelled": 5, "unlabelled": 1,
        "decisions": 6, "approve": 4, "review": 0, "decline": 2,
    }  # fmt: skip
    # t11 (not mature) is nowhere.
    assert v2["counts"] == {
        "TP": 2, "FP": 0, "TN": 1, "FN": 0, "labelled": 3, "unlabelled": 1,
        "decisions": 4, "approve": 1, "review": 1, "decline": 2,
    }  # fmt: skip
    r1 = v1["rates"]
    assert (r1["recall"]["value"], r1["recall"]["k"], r1["recall"]["n"]) == (0.5, 1, 2)
    assert r1["fpr"]["value"] == pytest.approx(1 / 3)
    assert r1["precision"]["value"] == 0.5
    assert r1["decline_rate"]["value"] == pytest.approx(2 / 6)
    assert r1["fpr"]["cards"] == 2
    assert v2["rates"]["flag_rate"]["value"] == pytest.approx(3 / 4)
    assert v1["cards"] == 2
    assert s["rows"]["in_window"] == 10
    assert s["window"]["maturity_days"] == 1


def test_money_stays_per_currency_unless_rates_are_given() -> None:
    v1, v2 = _by(_summary())["v1"], _by(_summary())["v2"]
    assert set(v1["money"]) == {"EUR", "GBP"}
    eur, gbp = v1["money"]["EUR"], v1["money"]["GBP"]
    assert (eur["fraud_caught"], eur["fraud_missed"], eur["good_approved"]) == (100, 50, 20)
    assert (gbp["good_flagged"], gbp["good_approved"], gbp["declined"]) == (30, 10, 30)
    assert eur["fraud_caught_share"]["value"] == pytest.approx(100 / 150)
    assert "money_converted" not in v1
    assert v2["money"]["USD"]["declined"] == 60  # all decisions, labelled or not
    assert v2["money"]["EUR"]["fraud_caught"] == 210

    rates = parse_rates({"base": "EUR", "rates": {"GBP": 1.2, "USD": 0.9}})
    conv = _by(_summary(Options(rates=rates)))["v1"]["money_converted"]
    assert conv["currency"] == "EUR"
    assert conv["good_flagged"] == pytest.approx(36.0)
    assert conv["declined"] == pytest.approx(100 + 36.0)
    with pytest.raises(ConfigError, match="no rate for USD"):
        _summary(Options(rates=parse_rates({"base": "EUR", "rates": {"GBP": 1.2}})))


def test_unlabelled_as_genuine_only_where_every_decision_was_read() -> None:
    s = _by(_summary(Options(unlabelled="genuine")))
    assert (s["v1"]["counts"]["TN"], s["v1"]["counts"]["unlabelled"]) == (3, 0)  # t6
    assert s["v2"]["counts"]["FP"] == 1  # t10, declined and never reported
    # fraud.decisions complete only from 5 days ago: nothing older is counted as genuine, and
    # the decision rates have no decisions to count.
    assert _by(_summary(Options(unlabelled="genuine"), decisions_from=NOW - 5 * DAY)) == {}
    late = _by(_summary(decisions_from=NOW - 5 * DAY))
    assert late["v1"]["counts"]["labelled"] == 5  # labelled outcomes do not need the decisions
    assert late["v1"]["counts"]["decisions"] == 0
    assert late["v1"]["rates"]["decline_rate"]["value"] is None


def test_window_since_until() -> None:
    s = _summary(since=NOW - 5 * DAY)
    assert s["versions"] == []
    assert s["rows"]["in_window"] == 0
    s = _summary(until=NOW - 11 * DAY)
    assert s["versions"] == []


def test_comparisons_are_named_and_too_few_cards_are_never_significant() -> None:
    (comp,) = _summary()["comparisons"]
    assert (comp["champion"], comp["challenger"]) == ("v1", "v2")
    assert comp["kind"] == "independent samples (different cards)"
    metrics = [t["metric"] for t in comp["tests"]]
    assert metrics[:5] == ["recall", "fpr", "precision", "decline_rate", "flag_rate"]
    assert "fraud_money_caught_EUR" in metrics
    for t in comp["tests"]:
        assert t["significant"] is False
        assert t["note"].startswith("too few to say")


# ---------------------------------------------------------------- a bigger, random world


def _random_world(seed: int = 4) -> tuple[list[Decision], list[Outcome]]:
    r = random.Random(seed)
    decisions, outs = [], []
    for c in range(400):
        variant, version = ("challenger", "v2") if c % 3 == 0 else ("champion", "v1")
        skill = r.betavariate(3, 1) if variant == "challenger" else r.betavariate(2, 2)
        fraudy = r.random() < 0.3
        for k in range(r.randint(1, 8)):
            is_fraud = fraudy and r.random() < 0.7
            p = skill if is_fraud else 0.05
            kind = "decline" if r.random() < p else "approve"
            shadow_kind = "review" if r.random() < p * 0.8 else "approve"
            d = dec(
                f"t{c}-{k}", f"c{c}", version, variant, kind,  # type: ignore[arg-type]
                age_days=r.uniform(2, 30), amount=round(r.uniform(1, 500), 2),
                currency=r.choice(["EUR", "GBP"]), shadow=("v3", shadow_kind),  # type: ignore[arg-type]
            )  # fmt: skip
            decisions.append(d)
            if is_fraud or r.random() < 0.3:
                outs += [out(d, is_fraud), out(d, is_fraud, shadow=True)]
    return decisions, outs


def _per_card(decisions: list[Decision], outs: list[Outcome], version: str) -> tuple[list, list]:
    labels = {o.transaction_id: o.is_fraud for o in outs}
    y: dict[str, int] = defaultdict(int)
    x: dict[str, int] = defaultdict(int)
    for d in decisions:
        if d.model_version == version and labels.get(d.transaction_id) is True:
            x[d.card_id] += 1
            y[d.card_id] += d.decision != "approve"
    cards = sorted(x)
    return [y[c] for c in cards], [x[c] for c in cards]


def test_rates_and_differences_are_the_card_level_estimates() -> None:
    decisions, outs = _random_world()
    led = Ledger.of(join_rows(decisions, latest_outcomes(outs)))
    s = summarise(led, make_window((), now=NOW, maturity_days=1), Options(bootstrap=300, seed=5))
    v1 = _by(s)["v1"]["rates"]["recall"]
    y1, x1 = _per_card(decisions, outs, "v1")
    direct = cluster_rate(y1, x1)
    assert v1["value"] == pytest.approx(direct.value)
    assert v1["ci95"] == [pytest.approx(direct.ci95[0]), pytest.approx(direct.ci95[1])]
    assert v1["deff"] == pytest.approx(direct.deff)

    champ = next(c for c in s["comparisons"] if "champion" in c)
    recall = next(t for t in champ["tests"] if t["metric"] == "recall")
    y2, x2 = _per_card(decisions, outs, "v2")
    zeros1, zeros2 = [0] * len(y1), [0] * len(y2)
    d = cluster_difference(y1 + zeros2, x1 + zeros2, zeros1 + y2, zeros1 + x2)
    assert recall["difference"] == pytest.approx(d.difference)
    assert recall["p_value"] == pytest.approx(d.p_value)
    assert recall["significant"] is (d.p_value < 0.05)
    assert recall["cards"] == [len(y1), len(y2)]
    pw = recall["power"]
    assert pw["detectable_now"] == pytest.approx(minimum_detectable_difference(d.se))
    assert 20 < pw["days_observed"] <= 28
    assert pw["second_share"] == pytest.approx(len(y2) / (len(y1) + len(y2)))
    assert pw["target"] == pytest.approx(0.1 * d.a)
    assert pw["days_for_target"] > 0
    assert recall["bootstrap"]["resamples"] == 300
    assert recall["bootstrap"]["se"] == pytest.approx(d.se, rel=0.25)
    again = summarise(
        led, make_window((), now=NOW, maturity_days=1), Options(bootstrap=300, seed=5)
    )
    assert again == s  # seeded: the same report twice

    paired = [c for c in s["comparisons"] if c["kind"] == "paired (the same transactions)"]
    assert {(c["decider"], c["shadow"]) for c in paired} == {("v1", "v3"), ("v2", "v3")}
    p1 = next(c for c in paired if c["decider"] == "v1")
    flag = next(t for t in p1["tests"] if t["metric"] == "flag_rate")
    assert flag["cards"][0] == flag["cards"][1]  # the same cards on both sides
    assert flag["power"]["second_share"] is None
