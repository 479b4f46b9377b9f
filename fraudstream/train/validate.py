"""Check the trainer's defaults on labelled data other than the benchmark's test week.

``python -m fraudstream.train.validate sim --seed 7`` trains with the defaults on a simulated
history (labels by the simulator's feedback schedule) and reports the held-out period, with
ablations (no entity features; no state at all) and the class weights side by side.
``python -m fraudstream.train.validate handbook`` does the same on time-ordered validation weeks
inside the Handbook's training period (July 2018), under the Handbook's protocol (7-day label
delay, cards with known fraud left out): the test week is never looked at here.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fraudstream.core import quality
from fraudstream.train import dataset
from fraudstream.train.dataset import Dataset
from fraudstream.train.search import CLASS_WEIGHTS, Params, fit, predict
from fraudstream.train.trainer import simulator_labels, train

DAY = 86400.0
HANDBOOK_WEEKS = (("2018-07-04", "2018-07-11"), ("2018-07-11", "2018-07-18"),
                  ("2018-07-18", "2018-07-25"))  # fmt: skip


def _ts(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def _row(name: str, m: dict[str, Any]) -> str:
    return (
        f"{name:34s} AUC {m['auc_roc']:.4f}  AP {m['average_precision']:.4f}  "
        f"CP@100 {m['card_precision_at_100']:.3f}"
    )


def simulator(seed: int, days: float, sim: dict[str, Any], nthread: int) -> list[str]:
    from fraudstream.sim.generator import SimConfig, generate

    events = list(generate(SimConfig(seed=seed, **sim), days=days))
    data = dataset.build(events, simulator_labels(events, seed, 3.0))
    kw: dict[str, Any] = {"warmup_days": 7.0, "gap_days": 3.0, "save": False, "nthread": nthread}
    out = [f"simulator seed {seed} {sim or 'default world'}: {len(events):,} transactions"]
    base = Params()
    for cw in CLASS_WEIGHTS:
        _, rep = train(data, "v", ".", params=replace(base, class_weight=cw), **kw)
        tag = " (default)" if cw == base.class_weight else ""
        out.append(_row(f"  defaults, class weight {cw}{tag}", rep["metrics"]))
    _, rep = train(data, "v", ".", params=base, use_entities=False, **kw)
    out.append(_row("  without entity features", rep["metrics"]))
    _, rep = train(data, "v", ".", params=base, use_entities=False, use_card_state=False, **kw)
    out.append(_row("  without any state", rep["metrics"]))
    return out


def handbook_weeks(
    data: Dataset, params: Params, nthread: int, off: tuple[str, ...] = ()
) -> dict[str, float]:
    """Mean over the validation weeks: fit on [warm-up, week − 7 d), score the week under the
    Handbook's protocol (cards with a fraud known since two weeks before left out)."""
    from fraudstream.core.features import FEATURE_NAMES

    X = data.X
    if off:
        X = X.copy()
        for name in off:
            X[:, FEATURE_NAMES.index(name)] = 0.0
    start = data.index_at(_ts("2018-05-08"))
    res = []
    for a, b in HANDBOOK_WEEKS:
        va, vb = _ts(a), _ts(b)
        fit_end, v0, v1 = data.index_at(va - 7 * DAY), data.index_at(va), data.index_at(vb)
        booster = fit(X[start:fit_end], data.y[start:fit_end], params, nthread)
        s = predict(booster, X[v0:v1])
        keep = _not_known(data, v0, v1, va - 14 * DAY)
        sl = np.arange(v0, v1)[keep]
        y, day, card = data.y[sl], quality.day_index(data.ts[sl]), data.card[sl]
        res.append(
            {
                "auc_roc": quality.auc_roc(y, s[keep]),
                "average_precision": quality.average_precision(y, s[keep]),
                "card_precision_at_100": quality.card_precision_at_k(
                    day, card, y, s[keep], 100
                ).mean,
            }
        )
    return {k: float(np.mean([r[k] for r in res])) for k in res[0]}


def _not_known(data: Dataset, v0: int, v1: int, since: float) -> np.ndarray:
    """Rows of [v0, v1) whose card had no fraud known (7-day delay) since ``since``."""
    fr = np.flatnonzero(data.y & (data.ts >= since))
    day = quality.day_index(data.ts[v0:v1])
    keep = np.ones(v1 - v0, dtype=bool)
    for d in np.unique(day).tolist():
        known = set(data.card[fr[data.ts[fr] < d * DAY - 7 * DAY]].tolist())
        m = day == d
        keep[m] = ~np.isin(data.card[v0:v1][m], list(known))
    return keep


def handbook(nthread: int) -> list[str]:
    from fraudstream.backtest import handbook as hb
    from fraudstream.sim.files import read_labelled_file

    path = hb.data_dir()
    if path is None:
        raise SystemExit("the Handbook's data is not found (FRAUD_HANDBOOK_DIR)")
    lf = read_labelled_file(
        path / "transactions.parquet", hb.MAPPING, constants=hb.CONSTANTS, naive_utc=True,
        until=_ts(hb.TRAIN_UNTIL),
    )  # fmt: skip
    data = dataset.build(lf.rows, label_delay_days=hb.LABEL_DELAY_DAYS)
    out = ["Handbook, validation weeks 2018-07-04 … 07-24 (mean of three), protocol filter"]
    base = Params()
    for cw in CLASS_WEIGHTS:
        m = handbook_weeks(data, replace(base, class_weight=cw), nthread)
        out.append(_row(f"  defaults, class weight {cw}", m))
    from fraudstream.core.features import ENTITY_FEATURES

    out.append(
        _row("  without entity features", handbook_weeks(data, base, nthread, ENTITY_FEATURES))
    )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("what", choices=["sim", "handbook"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=float, default=60.0)
    ap.add_argument("--cards", type=int, default=None)
    ap.add_argument("--merchants", type=int, default=None)
    ap.add_argument("--fraud-rate", type=float, default=None)
    ap.add_argument("--nthread", type=int, default=0)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.what == "sim":
        sim = {
            k: v
            for k, v in (
                ("n_cards", a.cards),
                ("n_merchants", a.merchants),
                ("fraud_rate", a.fraud_rate),
            )
            if v is not None
        }
        lines = simulator(a.seed, a.days, sim, a.nthread)
    else:
        lines = handbook(a.nthread)
    print("\n".join(lines))
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
