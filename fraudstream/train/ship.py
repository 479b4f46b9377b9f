"""Regenerate the two shipped model versions: ``python -m fraudstream.train.ship [--models-dir D]``.

Deterministic: fixed simulator seed, fixed XGBoost seeds (same XGBoost version → same trees).

* ``champion-v1`` — the conservative incumbent: a shorter history (the first 150 000 simulated
  transactions), shallow trees (depth 4), at most 120 rounds.
* ``challenger-v2`` — three times the history (450 000 transactions of the same simulated world),
  deeper trees (depth 6), up to 400 rounds at a lower learning rate, and monotone constraints: the
  score can only rise with the amount relative to the card's average, a new device, a foreign
  country and the card's small-amount count in the last hour. Its metadata also records the
  stateless ablation (the same training without card-state features).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.core.registry import load
from fraudstream.core.replay import replay
from fraudstream.sim.generator import SimConfig, generate
from fraudstream.train.dataset import evaluate
from fraudstream.train.trainer import simulator_labels, train

SEED = 101
VERSIONS = ("champion-v1", "challenger-v2")
MONOTONE = {
    "amount_to_card_avg": 1,
    "new_device": 1,
    "foreign_country": 1,
    "small_count_1h": 1,
}


def _brief(m: dict[str, Any]) -> str:
    return (
        f"AUC {m['auc_roc']:.4f}  AP {m['average_precision']:.4f}  "
        f"P@{m['k']} {m['precision_at_k']:.3f}"
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
    events = list(generate(cfg, n=450_000))
    print(f"simulated {len(events)} transactions in {time.perf_counter() - t0:.1f}s")
    source = f"simulator seed={SEED} (cards={cfg.n_cards}, merchants={cfg.n_merchants})"
    out: dict[str, Any] = {}

    t0 = time.perf_counter()
    _, v1 = train(
        events[:150_000],
        "champion-v1",
        models_dir,
        n_trees=120,
        max_depth=4,
        learning_rate=0.15,
        seed=SEED,
        warmup_days=3.0,
        source=f"{source}, first 150000 transactions",
        notes="incumbent: shorter history (150k tx), depth 4, <=120 rounds, eta 0.15",
        nthread=nthread,
    )
    print(f"champion-v1:   {_brief(v1['metrics'])}  ({time.perf_counter() - t0:.1f}s)")
    out["champion-v1"] = v1

    common: dict[str, Any] = {
        "n_trees": 400,
        "max_depth": 6,
        "learning_rate": 0.08,
        "seed": SEED,
        "warmup_days": 3.0,
        "monotone": MONOTONE,
        "nthread": nthread,
    }
    t0 = time.perf_counter()
    _, ab = train(events, "ablation", models_dir, use_card_state=False, save=False, **common)
    print(f"  (stateless ablation of v2: {_brief(ab['metrics'])})")
    keep = ("auc_roc", "average_precision", "precision_at_k", "k", "rows", "frauds")
    _, v2 = train(
        events,
        "challenger-v2",
        models_dir,
        source=f"{source}, 450000 transactions",
        notes=(
            "challenger: 3x history (450k tx), depth 6, <=400 rounds, eta 0.08, monotone "
            "increasing in " + ", ".join(MONOTONE)
        ),
        extra_metrics={"stateless_ablation": {k: ab["metrics"][k] for k in keep}},
        **common,
    )
    print(
        f"challenger-v2: {_brief(v2['metrics'])}  ({time.perf_counter() - t0:.1f}s incl. ablation)"
    )
    out["challenger-v2"] = v2
    out["ablation"] = ab

    # Both shipped models on the same later period (v2's validation rows; v1 never saw them).
    X, ids = replay((e.tx for e in events), simulator_labels(events, SEED))
    label = {e.tx.transaction_id: e.is_fraud for e in events}
    rows = v2["training"]["validation"]["rows"]
    Xv = np.ascontiguousarray(X[-rows:].astype(np.float32))
    yv = np.array([label[i] for i in ids[-rows:]], dtype=bool)
    for v in VERSIONS:
        m = evaluate(yv, load(models_dir, v).predict(Xv))
        out[f"common_holdout/{v}"] = m
        print(f"common holdout ({rows} rows, last 25% of 450k) {v}: {_brief(m)}")
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
