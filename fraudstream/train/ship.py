"""Regenerate the two shipped model versions: ``python -m fraudstream.train.ship [--models-dir D]``.

Deterministic: fixed simulator seed, fixed XGBoost seeds (same XGBoost version → same trees).
Feature set fs2, replayed point-in-time: labels arrive by the simulator's feedback schedule
(chargebacks after ~3 days on average, some sooner, 10 % never, a few reversed; few genuine
transactions are ever labelled), so merchant and card-label features see only what was reported.

* ``champion-v1`` — the conservative incumbent: a shorter history (the first 200 000 simulated
  transactions), shallow trees (depth 4), 150 rounds.
* ``challenger-v2`` — three times the history (600 000 transactions, 60 days of the same world),
  deeper trees (depth 6), 400 rounds at a lower learning rate, and monotone constraints: the score
  can only rise with the amount relative to the card's average, a new device, a foreign country,
  the card's small-amount count in the last hour and the merchant's known frauds. Its metadata
  also records two ablations: without entity features, and without any state.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.core import quality
from fraudstream.core.registry import load
from fraudstream.sim.generator import SimConfig, generate
from fraudstream.train import dataset
from fraudstream.train.dataset import evaluate
from fraudstream.train.search import Params
from fraudstream.train.trainer import simulator_labels, train

SEED = 101
VERSIONS = ("champion-v1", "challenger-v2")
N_EVENTS = 600_000
N_CHAMPION = 200_000
LABEL_DELAY_DAYS = 3.0  # mean chargeback delay of the feedback schedule
MONOTONE = {
    "amount_to_card_avg": 1,
    "new_device": 1,
    "foreign_country": 1,
    "small_count_1h": 1,
    "m_frauds_30d": 1,
}


def _brief(m: dict[str, Any]) -> str:
    cp = m.get("card_precision_at_100", float("nan"))
    return (
        f"AUC {m['auc_roc']:.4f}  AP {m['average_precision']:.4f}  "
        f"P@{m['k']} {m['precision_at_k']:.3f}  CP@100 {cp:.3f}"
    )


def ship(models_dir: Path, *, force: bool = False, nthread: int = 0) -> dict[str, Any]:
    for v in VERSIONS:
        folder = models_dir / v
        if folder.exists():
            if not force:
                raise SystemExit(f"{folder} exists; pass --force to regenerate it")
            shutil.rmtree(folder)
    cfg = SimConfig(seed=SEED)
    t0 = time.perf_counter()
    events = list(generate(cfg, n=N_EVENTS))
    labels = simulator_labels(events, SEED, LABEL_DELAY_DAYS)
    data = dataset.build(events, labels)
    print(f"simulated and replayed {len(events)} transactions in {time.perf_counter() - t0:.1f}s")
    source = f"simulator seed={SEED} (cards={cfg.n_cards}, merchants={cfg.n_merchants})"
    common: dict[str, Any] = {
        "warmup_days": 7.0,
        "gap_days": LABEL_DELAY_DAYS,
        "nthread": nthread,
    }
    out: dict[str, Any] = {}

    t0 = time.perf_counter()
    _, v1 = train(
        data.prefix(N_CHAMPION),
        "champion-v1",
        models_dir,
        params=Params(n_trees=150, max_depth=4, learning_rate=0.1, seed=SEED),
        source=f"{source}, first {N_CHAMPION} transactions, labels by the feedback schedule",
        notes="incumbent: shorter history, depth 4, 150 rounds, eta 0.1",
        **common,
    )
    print(f"champion-v1:   {_brief(v1['metrics'])}  ({time.perf_counter() - t0:.1f}s)")
    out["champion-v1"] = v1

    p2 = Params(n_trees=400, max_depth=6, learning_rate=0.05, seed=SEED, monotone=MONOTONE)
    t0 = time.perf_counter()
    keep = ("auc_roc", "average_precision", "precision_at_k", "card_precision_at_100", "k")
    ablations = {}
    for name, use_card_state in (("without_entity_features", True), ("without_any_state", False)):
        _, ab = train(
            data, "ablation", models_dir, params=p2, save=False, use_entities=False,
            use_card_state=use_card_state, **common,
        )  # fmt: skip
        ablations[name] = {k: ab["metrics"][k] for k in keep}
        print(f"  (ablation of v2 {name}: {_brief(ab['metrics'])})")
    _, v2 = train(
        data,
        "challenger-v2",
        models_dir,
        params=p2,
        source=f"{source}, {N_EVENTS} transactions, labels by the feedback schedule",
        notes=(
            "challenger: 3x history, depth 6, 400 rounds, eta 0.05, monotone increasing in "
            + ", ".join(MONOTONE)
        ),
        extra_metrics={"ablations": ablations},
        **common,
    )
    print(
        f"challenger-v2: {_brief(v2['metrics'])}  ({time.perf_counter() - t0:.1f}s incl. ablations)"
    )
    out["challenger-v2"] = v2
    out["ablations"] = ablations

    # Both shipped models on the same later period (v2's validation rows; v1 never saw them).
    rows = v2["training"]["validation"]["rows"]
    Xv = np.ascontiguousarray(data.X[-rows:])
    yv, day, card = data.y[-rows:], quality.day_index(data.ts[-rows:]), data.card[-rows:]
    for v in VERSIONS:
        m = evaluate(yv, load(models_dir, v).predict(Xv), day=day, card=card)
        out[f"common_holdout/{v}"] = m
        print(f"common holdout ({rows} rows, last 25% after warm-up) {v}: {_brief(m)}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--force", action="store_true", help="replace existing shipped versions")
    ap.add_argument("--nthread", type=int, default=0, help="XGBoost threads (0 = all cores)")
    args = ap.parse_args(argv)
    ship(args.models_dir, force=args.force, nthread=args.nthread)


if __name__ == "__main__":
    main()
