"""What a backtest leaves behind: decisions, scores and outcomes (Parquet), metrics (JSON), the
printed report (text) and one precision–recall plot (PNG) per version."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.backtest.evaluate import Evaluation
from fraudstream.backtest.run import BacktestRun
from fraudstream.core import quality
from fraudstream.core.outcomes import classify


def write_records(run: BacktestRun, out: Path) -> dict[str, Path]:
    """decisions.parquet, scores.parquet and outcomes.parquet (one row per version's score with
    its label and outcome kind) in ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    decisions = sorted(run.decisions.values(), key=lambda d: run.truth[d.transaction_id].ts)
    paths = {
        "decisions": out / "decisions.parquet",
        "scores": out / "scores.parquet",
        "outcomes": out / "outcomes.parquet",
    }
    pq.write_table(
        pa.table(
            {
                "transaction_id": [d.transaction_id for d in decisions],
                "card_id": [d.card_id for d in decisions],
                "event_ts": [run.truth[d.transaction_id].ts for d in decisions],
                "decision": [d.decision for d in decisions],
                "score": [d.score for d in decisions],
                "model_version": [d.model_version for d in decisions],
                "variant": [d.variant for d in decisions],
                "reasons": [", ".join(r.feature for r in d.reasons) for d in decisions],
                "amount": [d.amount for d in decisions],
                "currency": [d.currency for d in decisions],
            }
        ),
        paths["decisions"],
        compression="zstd",
    )
    scores = run.scores
    pq.write_table(
        pa.table(
            {
                "transaction_id": [s.transaction_id for s in scores],
                "model_version": [s.model_version for s in scores],
                "role": [s.role for s in scores],
                "score": [s.score for s in scores],
                "decision": [s.decision for s in scores],
            }
        ),
        paths["scores"],
        compression="zstd",
    )
    truths = [run.truth[s.transaction_id] for s in scores]
    pq.write_table(
        pa.table(
            {
                "transaction_id": [s.transaction_id for s in scores],
                "model_version": [s.model_version for s in scores],
                "role": [s.role for s in scores],
                "decision": [s.decision for s in scores],
                "is_fraud": [t.is_fraud for t in truths],
                "outcome": [
                    classify(s.decision, t.is_fraud) for s, t in zip(scores, truths, strict=True)
                ],
                "fraud_kind": [t.kind for t in truths],
                "amount": [t.amount for t in truths],
            }
        ),
        paths["outcomes"],
        compression="zstd",
    )
    return paths


def write_plots(ev: Evaluation, out: Path) -> dict[str, Path] | str:
    """pr-<version>.png per version; a message instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plots: matplotlib is not installed (pip install 'fraudstream[backtest]')"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for version, vs in sorted(ev.scores.items()):
        precision, recall, thr = quality.pr_curve(vs.y, vs.score)
        m = ev.by_version[version]
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        ax.step(recall, precision, where="post", color="#1f5fa8")
        for name, marker in (("review", "o"), ("decline", "s")):
            t = _threshold_of(vs, name)
            if t is not None and len(thr):
                i = int(np.searchsorted(-thr, -t, side="right")) - 1
                if 0 <= i < len(thr):
                    ax.plot(recall[i], precision[i], marker, color="#c0392b", label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall (share of frauds)")
        ax.set_ylabel("precision")
        ax.set_title(
            f"{version}: AP {m['average_precision']:.3f}, AUC {m['auc_roc']:.3f} "
            f"({m['frauds']} frauds / {m['transactions']:,})",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
        path = out / f"pr-{version}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        paths[version] = path
    return paths


def _threshold_of(vs: Any, kind: str) -> float | None:
    """The lowest score that got ``kind`` (or stricter): where the threshold sits on the curve."""
    rank = {"review": ("review", "decline"), "decline": ("decline",)}[kind]
    m = np.isin(vs.decision, rank)
    return float(vs.score[m].min()) if m.any() else None


def write_metrics(ev: Evaluation, run: BacktestRun, out: Path, extra: dict[str, Any]) -> Path:
    body = {
        **extra,
        "excluded_transactions_of_known_defrauded_cards": ev.excluded_known_cards,
        "rejected": len(run.rejected),
        "labels_replayed": len(run.labels),
        "labels_of_unknown_transactions": run.unknown_labels,
        "by_version": ev.by_version,
        "by_day": ev.by_day,
        "by_kind": ev.by_kind,
    }
    path = out / "metrics.json"
    path.write_text(json.dumps(body, indent=2, default=_json) + "\n")
    return path


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v))


def _f(v: float, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def render(ev: Evaluation, card_k: int = 100) -> str:
    """The printed report: per version, then per day, then decisions and money."""
    cp = f"card_precision_at_{card_k}"
    lines = []
    if ev.excluded_known_cards:
        lines.append(
            f"left out: {ev.excluded_known_cards:,} transactions of cards whose fraud was "
            "already known (the Handbook's protocol)"
        )
    lines.append(
        f"{'version':24s} {'transactions':>12s} {'frauds':>7s} {'AUC':>7s} {'AP':>7s} "
        f"{'CP@' + str(card_k):>7s}"
    )
    for v, m in ev.by_version.items():
        lines.append(
            f"{v:24s} {m['transactions']:>12,d} {m['frauds']:>7d} {_f(m['auc_roc']):>7s} "
            f"{_f(m['average_precision']):>7s} {_f(m[cp], 3):>7s}"
        )
    for v, days in ev.by_day.items():
        lines.append(f"\n{v} per day")
        lines.append(f"  {'day':10s} {'tx':>7s} {'frauds':>6s} {'AUC':>7s} {'AP':>7s} {'CP':>6s}")
        for d in days:
            lines.append(
                f"  {d['day']:10s} {d['transactions']:>7,d} {d['frauds']:>6d} "
                f"{_f(d['auc_roc']):>7s} {_f(d['average_precision']):>7s} {_f(d[cp], 2):>6s}"
            )
    for v, m in ev.by_version.items():
        dec = m["decisions"]
        lines.append(
            f"\n{v} decisions: approve {dec['approve']:,}  review {dec['review']:,}  "
            f"decline {dec['decline']:,};  flagged precision {_f(m['flagged']['precision'], 3)} "
            f"recall {_f(m['flagged']['recall'], 3)};  declined precision "
            f"{_f(m['declined']['precision'], 3)} recall {_f(m['declined']['recall'], 3)}"
        )
        for cur, mo in m["money"].items():
            lines.append(
                f"  {cur}: fraud {mo['fraud_total']:,.2f} — caught (review or decline) "
                f"{mo['fraud_caught']:,.2f}, declined {mo['fraud_declined']:,.2f}, missed "
                f"{mo['fraud_missed']:,.2f}; good declined {mo['good_declined']:,.2f}, good "
                f"sent to review {mo['good_reviewed']:,.2f}"
            )
        kinds = ev.by_kind.get(v) or []
        if kinds:
            lines.append(
                "  by fraud kind (each against all genuine): "
                + ";  ".join(
                    f"{k['kind']} {k['frauds']} frauds AUC {_f(k['auc_roc'], 3)} flagged "
                    f"{k['recall_flagged']:.0%}"
                    for k in kinds
                )
            )
    return "\n".join(lines)
