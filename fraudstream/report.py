"""`fraudstream report`: per-version outcomes with 95 % intervals, champion vs challenger.

Built from the ``fraud.outcomes`` topic (the last Outcome per transaction, version and variant is
the current one, so reversed labels count once, with their final value). The arithmetic is in
``summarise``, which is pure and tested without a broker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fraudstream.core.messages import Outcome, decode_outcome
from fraudstream.core.outcomes import Confusion
from fraudstream.core.stats import mcnemar, min_samples_note, two_proportion_z_test, wilson
from fraudstream.errors import InvalidMessage
from fraudstream.settings import Settings

ALPHA = 0.05


def current_outcomes(outcomes: Iterable[Outcome]) -> dict[tuple[str, str, str], Outcome]:
    latest: dict[tuple[str, str, str], Outcome] = {}
    for o in outcomes:
        latest[(o.transaction_id, o.model_version, o.variant)] = o
    return latest


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n)
    return {"value": (k / n) if n else None, "k": k, "n": n, "ci95": [low, high]}


def _compare(name: str, k1: int, n1: int, k2: int, n2: int) -> dict[str, Any]:
    z, p = two_proportion_z_test(k1, n1, k2, n2)
    note = min_samples_note(n1, n2, k1, k2)
    return {
        "metric": name,
        "test": "two-proportion z-test (pooled)",
        "z": z,
        "p_value": p,
        "samples": [n1, n2],
        "significant": (p < ALPHA) and note is None,
        "note": note,
    }


def summarise(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    latest = current_outcomes(outcomes)
    book: dict[tuple[str, str], Confusion] = {}
    by_tx: dict[str, dict[str, Outcome]] = {}
    for (txid, _version, variant), o in latest.items():
        book.setdefault((o.model_version, variant), Confusion()).update(o.outcome, o.amount)
        by_tx.setdefault(txid, {})["shadow" if variant == "shadow" else "decider"] = o

    versions = []
    for (version, variant), c in sorted(book.items()):
        versions.append(
            {
                "model_version": version,
                "variant": variant,
                "counts": {"TP": c.tp, "FP": c.fp, "TN": c.tn, "FN": c.fn, "labelled": c.n},
                "precision": _rate(c.tp, c.tp + c.fp),
                "recall": _rate(c.tp, c.tp + c.fn),
                "fpr": _rate(c.fp, c.fp + c.tn),
                "amounts": {
                    "fraud_caught": round(c.fraud_amount_caught, 2),
                    "fraud_missed": round(c.fraud_amount_missed, 2),
                    "good_flagged": round(c.good_amount_flagged, 2),
                    "good_approved": round(c.good_amount_approved, 2),
                },
            }
        )

    comparisons = []
    deciders = {(v, var): c for (v, var), c in book.items() if var != "shadow"}
    champs = [(v, c) for (v, var), c in deciders.items() if var == "champion"]
    challs = [(v, c) for (v, var), c in deciders.items() if var == "challenger"]
    for cv, cc in champs:
        for xv, xc in challs:
            comparisons.append(
                {
                    "champion": cv,
                    "challenger": xv,
                    "kind": "independent samples (different cards)",
                    "tests": [
                        _compare("recall", cc.tp, cc.tp + cc.fn, xc.tp, xc.tp + xc.fn),
                        _compare("fpr", cc.fp, cc.fp + cc.tn, xc.fp, xc.fp + xc.tn),
                        _compare("precision", cc.tp, cc.tp + cc.fp, xc.tp, xc.tp + xc.fp),
                    ],
                }
            )

    pairs: dict[tuple[str, str], list[int]] = {}
    for rec in by_tx.values():
        d, s = rec.get("decider"), rec.get("shadow")
        if d is None or s is None:
            continue
        right_d = d.outcome in ("TP", "TN")
        right_s = s.outcome in ("TP", "TN")
        cell = pairs.setdefault((d.model_version, s.model_version), [0, 0, 0])
        cell[0] += 1
        cell[1] += right_d and not right_s
        cell[2] += right_s and not right_d
    for (dv, sv), (n, b, c_) in sorted(pairs.items()):
        stat, p = mcnemar(b, c_)
        comparisons.append(
            {
                "decider": dv,
                "shadow": sv,
                "kind": "paired (the same transactions)",
                "tests": [
                    {
                        "metric": "correct decisions",
                        "test": "McNemar (exact binomial below 25 discordant pairs)",
                        "statistic": stat,
                        "p_value": p,
                        "samples": [n, n],
                        "discordant": {"decider_right_only": b, "shadow_right_only": c_},
                        "significant": p < ALPHA and (b + c_) >= 10,
                        "note": None if (b + c_) >= 10 else "too few discordant pairs to say",
                    }
                ],
            }
        )
    return {"versions": versions, "comparisons": comparisons, "transactions_labelled": len(by_tx)}


def _fmt(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return "   n/a              "
    lo, hi = r["ci95"]
    return f"{r['value']:.3f} [{lo:.3f},{hi:.3f}]"


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"{'version':16s} {'variant':10s} {'TP':>6s} {'FP':>6s} {'TN':>8s} {'FN':>6s}  "
        f"{'precision [95% CI]':22s} {'recall [95% CI]':22s} {'FPR [95% CI]':22s}"
    ]
    for v in summary["versions"]:
        c = v["counts"]
        lines.append(
            f"{v['model_version']:16s} {v['variant']:10s} {c['TP']:6d} {c['FP']:6d} {c['TN']:8d} "
            f"{c['FN']:6d}  {_fmt(v['precision']):22s} {_fmt(v['recall']):22s} {_fmt(v['fpr']):22s}"
        )
    if not summary["versions"]:
        lines.append("(no labelled outcomes yet)")
    for comp in summary["comparisons"]:
        who = (
            f"{comp['champion']} (champion) vs {comp['challenger']} (challenger)"
            if "champion" in comp
            else f"{comp['decider']} (deciding) vs {comp['shadow']} (shadow)"
        )
        lines.append("")
        lines.append(f"{who} — {comp['kind']}")
        for t in comp["tests"]:
            verdict = "significant" if t["significant"] else "not significant"
            note = f" — {t['note']}" if t.get("note") else ""
            lines.append(
                f"  {t['metric']:18s} {t['test']}: p={t['p_value']:.4g}, n={t['samples']}, "
                f"{verdict} at {ALPHA}{note}"
            )
    return "\n".join(lines)


def load_outcomes(settings: Settings) -> list[Outcome]:
    from fraudstream.kafka.clients import read_all

    out = []
    for msg in read_all(settings, [settings.topic_outcomes], timeout=120):
        try:
            out.append(decode_outcome(msg.value()))
        except InvalidMessage:
            continue
    return out


def render_report(settings: Settings) -> str:
    return render(summarise(load_outcomes(settings)))
