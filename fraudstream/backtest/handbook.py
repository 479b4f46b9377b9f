"""The Fraud Detection Handbook benchmark, in process: ``make model-quality``.

The Handbook's protocol (chapter 3, see ``../shared/data/handbook/README.md``): a label becomes
known 7 days after its transaction; the test week is 2018-08-08 … 08-14; transactions of cards
whose fraud was already known (a fraud in [2018-07-25, day − 7 d)) are left out — 58,264
transactions, 385 frauds; card precision@100 by the Handbook's rule. We train on every labelled
transaction before 2018-08-01 (the Handbook's own baseline uses 2018-07-25 … 07-31), replayed
point-in-time with the 7-day label delay, with the trainer's defaults, then replay 2018-04-01 …
08-14 through the worker's engine (``fraudstream backtest``'s code) and measure the test week.

    python -m fraudstream.backtest.handbook [--data DIR] [--out DIR] [--through-kafka [BOOTSTRAP]]

With ``--through-kafka`` the history from ``--replay-from`` (2018-07-01) is replayed twice more,
in process and through a broker and live workers (``fraudstream backtest --through-kafka``:
entity state from the aggregator, labels through the join), and the two must give the same
scores; without a bootstrap, the project's own broker is started for the run (``make
model-quality``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudstream.backtest import ceiling
from fraudstream.backtest.api import backtest_rows, report
from fraudstream.backtest.run import ThroughKafka
from fraudstream.sim.files import read_labelled_file
from fraudstream.train.dataset import label_events
from fraudstream.train.trainer import train

MAPPING = {
    "transaction_id": "TRANSACTION_ID",
    "card_id": "CUSTOMER_ID",
    "merchant_id": "TERMINAL_ID",
    "amount": "TX_AMOUNT",
    "event_time": "TX_DATETIME",
    "is_fraud": "TX_FRAUD",
    "fraud_kind": "TX_FRAUD_SCENARIO",
}
CONSTANTS = {"currency": "EUR"}
LABEL_DELAY_DAYS = 7.0
TRAIN_UNTIL = "2018-08-01"
TEST_FROM, TEST_TO = "2018-08-08", "2018-08-15"
KNOWN_SINCE = "2018-07-25"
# Where the through-Kafka replay starts (the issue's own setup): 38 days before the test week,
# more than the longest window (30 d) plus the label delay, so merchant and label features see
# what they would over the whole history; card features that span a card's whole life (its
# age, average amount, merchants seen) see less. The full history through Kafka takes hours on a
# 2-core machine (docs/model-quality.md).
LIVE_FROM = "2018-07-01"
WARMUP_DAYS = 37.0  # the longest window (30 d) plus the label delay: state before learning
VERSION = "handbook-fs2"
CARD_K = 100
EXPECTED_TEST = (58_264, 385)  # the Handbook's filtered test set

PUBLISHED = (
    ("logistic regression", 0.871, 0.606, 0.291),
    ("random forest", 0.867, 0.658, 0.287),
    ("XGBoost (baseline)", 0.862, 0.639, 0.273),
    ("XGBoost, tuned (chapter 5)", 0.869, 0.687, 0.303),
)
TARGETS = {"auc_roc": 0.88, "average_precision": 0.70, "card_precision_at_100": 0.31}
_CP = f"card_precision_at_{CARD_K}"
# Fraud scenario 2, compromised terminals: unknowable until a fraud at the terminal is labelled.
TERMINAL_KINDS = frozenset({"2"})


def _ts(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def data_dir(given: Path | None = None) -> Path | None:
    """Where the Handbook's data is: ``given``, else ``FRAUD_HANDBOOK_DIR``, else
    ``../shared/data/handbook`` (beside the repository), else ``/work/shared/data/handbook``;
    None when none of them holds ``transactions.parquet``."""
    return next((p for p in candidates(given) if (p / "transactions.parquet").is_file()), None)


def candidates(given: Path | None = None) -> list[Path]:
    if given is not None:
        return [given]
    env = os.environ.get("FRAUD_HANDBOOK_DIR")
    repo = Path(__file__).resolve().parents[2]
    return [
        *([Path(env)] if env else []),
        repo.parent / "shared" / "data" / "handbook",
        Path("/work/shared/data/handbook"),
    ]


def run(
    data: Path,
    out: Path,
    *,
    nthread: int = 0,
    log: Any = print,
    through: ThroughKafka | None = None,
    model: Path | None = None,
    replay_from: str = LIVE_FROM,
) -> dict[str, Any]:
    path = data / "transactions.parquet"
    t0 = time.perf_counter()
    lf = read_labelled_file(path, MAPPING, constants=CONSTANTS, naive_utc=True, until=_ts(TEST_TO))
    labels = label_events(lf.rows, None, LABEL_DELAY_DAYS)
    log(f"read {len(lf.rows):,} transactions up to {TEST_TO} ({time.perf_counter() - t0:.0f}s)")

    models = out / "models"
    if model is not None:  # a model this protocol trained before (its own folder)
        models = model
        log(f"using {models / VERSION} (trained before; not trained again)")
        return _evaluate(lf, labels, models, out, path, through, log, replay_from)
    if (models / VERSION).exists():
        import shutil

        shutil.rmtree(models / VERSION)
    until = _ts(TRAIN_UNTIL)
    history = [r for r in lf.rows if r[0].ts < until]
    t0 = time.perf_counter()
    _, rep = train(
        history,
        VERSION,
        models,
        labels=labels,
        gap_days=LABEL_DELAY_DAYS,
        warmup_days=WARMUP_DAYS,
        refit=True,
        source=f"Handbook transactions before {TRAIN_UNTIL}, labels 7 days after each",
        nthread=nthread,
    )
    m = rep["metrics"]
    log(
        f"trained {VERSION} on {rep['training']['fitted_on']['rows']:,} transactions "
        f"({time.perf_counter() - t0:.0f}s); its own held-out period "
        f"{rep['training']['validation']['from'][:10]} … "
        f"{rep['training']['validation']['to'][:10]}: AUC {m['auc_roc']:.4f} "
        f"AP {m['average_precision']:.4f} CP@{CARD_K} {m[f'card_precision_at_{CARD_K}']:.3f}"
    )

    return {
        **_evaluate(lf, labels, models, out, path, through, log, replay_from),
        "training": rep,
    }


def _evaluate(
    lf: Any,
    labels: Any,
    models: Path,
    out: Path,
    path: Path,
    through: Any,
    log: Any,
    replay_from: str = LIVE_FROM,
) -> dict[str, Any]:
    """The test week in process over the whole history and, with ``through``, the history from
    ``replay_from`` both in process and through Kafka: every row, and how far the live stream's
    scores are from the in-process ones on the same history."""
    res = _measure(lf.rows, labels, models, out / "backtest", path, None, log)
    if through is None:
        return {**res, "rows": [(res["where"], res["ours"])]}
    since = _ts(replay_from)
    rows = [r for r in lf.rows if r[0].ts >= since]
    labels = label_events(rows, None, LABEL_DELAY_DAYS)
    log(f"from {replay_from}: {len(rows):,} transactions, in process then through Kafka")
    short = _measure(rows, labels, models, out / "backtest-from", path, None, log, replay_from)
    live = _measure(rows, labels, models, out / "backtest-kafka", path, through, log, replay_from)
    local = {t: d.score for t, d in short["run"].decisions.items()}
    remote = {t: d.score for t, d in live["run"].decisions.items()}
    diffs = [abs(remote[t] - v) for t, v in local.items() if t in remote]
    parity = {
        "in_process": len(local),
        "through_kafka": len(remote),
        "max_abs_diff": max(diffs, default=0.0),
        "over_1e-6": sum(d > 1e-6 for d in diffs),
    }
    log(
        f"parity on the test week: {parity['through_kafka']:,} decisions through Kafka, "
        f"{parity['in_process']:,} in process; largest score difference "
        f"{parity['max_abs_diff']:.2e}, {parity['over_1e-6']} above 1e-6"
    )
    return {
        **live,
        "rows": [(w["where"], w["ours"]) for w in (res, short, live)],
        "parity": parity,
    }


def _measure(
    rows: Any,
    labels: Any,
    models: Path,
    out: Path,
    path: Path,
    through: Any,
    log: Any,
    replay_from: str | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    last = [t0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 60:
            last[0] = now
            log(f"  {done:,} of {total:,} decided ({done / (now - t0):,.0f}/s)")

    bt = backtest_rows(
        rows,
        labels,
        [VERSION],
        models,
        start=_ts(TEST_FROM),
        end=_ts(TEST_TO),
        through=through,
        progress=progress,
    )
    where = "in process" if through is None else "live stream"
    if replay_from is not None:
        where += f", history from {replay_from}"
    result = report(
        bt,
        out,
        known_since=_ts(KNOWN_SINCE),
        card_k=CARD_K,
        source=f"{path} {where}",
    )
    log(f"replayed {where} ({time.perf_counter() - t0:.0f}s)")
    ours = result["evaluation"].by_version[VERSION]
    vs = result["evaluation"].scores[VERSION]
    known = ceiling.knowable(vs, ceiling.places(r[0] for r in rows), labels, TERMINAL_KINDS)
    ours["card_precision_ceiling"] = ceiling.ceiling(vs, known, CARD_K, TARGETS[_CP])
    got = (ours["transactions"], ours["frauds"])
    if got != EXPECTED_TEST:
        raise SystemExit(
            f"the filtered test set has {got} (transactions, frauds), the Handbook's has "
            f"{EXPECTED_TEST}: the protocol was not reproduced"
        )
    return {"ours": ours, "backtest": result, "where": where, "run": bt}


def table(measured: list[tuple[str, dict[str, Any]]]) -> str:
    cp = _CP
    rows = [
        "| model | AUC ROC | average precision | card precision@100 |",
        "|---|---|---|---|",
    ]
    rows += [f"| {name} (published) | {a:.3f} | {p:.3f} | {c:.3f} |" for name, a, p, c in PUBLISHED]
    for where, ours in measured:
        rows.append(
            f"| **fraudstream {VERSION}** ({where}) | **{ours['auc_roc']:.3f}** | "
            f"**{ours['average_precision']:.3f}** | **{ours[cp]:.3f}** |"
        )
    rows.append(
        f"| target | {TARGETS['auc_roc']:.2f} | {TARGETS['average_precision']:.2f} | "
        f"{TARGETS[cp]:.2f} |"
    )
    for where, got in measured:
        c = got.get("card_precision_ceiling")
        if c is not None:
            rows.append(
                f"| ceiling of card precision@100 ({where}): every knowable fraud first, "
                f"the rest in the model's order / in {c['draws']} random orders | | | "
                f"{c['model_order']:.3f} / {c['random_mean']:.3f} "
                f"({c['random_min']:.3f}–{c['random_max']:.3f}) |"
            )
    rows.append("")
    ours = measured[-1][1]
    for where, got in measured:
        met = all(got[k] >= v for k, v in TARGETS.items())
        rows.append(f"{where}: targets {'met' if met else 'NOT met'}")
    c = ours.get("card_precision_ceiling")
    if c is not None:
        rows.append(
            f"{c['knowable']} of {c['frauds']} frauds knowable in time (the rest: compromised "
            f"terminals before any fraud there is labelled); card precision@100 "
            f"{TARGETS[_CP]:.2f} is reached by {c['random_reaching_target']:.0%} of the random "
            "orders of what cannot be told apart (docs/model-quality.md)"
        )
    rows.append(
        f"test week {TEST_FROM} … 08-14, filtered as the Handbook: {ours['transactions']:,} "
        f"transactions, {ours['frauds']} frauds"
    )
    return "\n".join(rows)


@contextlib.contextmanager
def _broker(given: str | None, out: Path) -> Iterator[str | None]:
    if given != "start":
        yield given
        return
    from fraudstream.kafka.broker import LocalBroker

    broker = LocalBroker(out / "broker")
    info = broker.start(port=None)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=None, help="folder with transactions.parquet")
    ap.add_argument("--out", type=Path, default=Path(".fraudstream/model-quality"))
    ap.add_argument("--nthread", type=int, default=0, help="XGBoost threads (0 = all cores)")
    ap.add_argument(
        "--through-kafka",
        nargs="?",
        const="start",
        default=None,
        metavar="BOOTSTRAP",
        help="replay through a broker and a live worker (no value: start the project's broker)",
    )
    ap.add_argument("--model", type=Path, default=None, help="models folder holding " + VERSION)
    ap.add_argument(
        "--replay-from",
        default=LIVE_FROM,
        metavar="DAY",
        help="with --through-kafka: the history replayed in process and through Kafka starts here",
    )
    args = ap.parse_args(argv)
    data = data_dir(args.data)
    if data is None:
        tried = ", ".join(str(p) for p in candidates(args.data))
        raise SystemExit(f"the Handbook's transactions.parquet is not in any of: {tried}")
    with _broker(args.through_kafka, args.out) as bootstrap:
        through = None
        if bootstrap is not None:
            through = ThroughKafka(bootstrap, 1, 2, args.out / "workers")
        res = run(
            data,
            args.out,
            nthread=args.nthread,
            through=through,
            model=args.model,
            replay_from=args.replay_from,
        )
    print()
    print(table(res["rows"]))
    print()
    print(res["backtest"]["text"])


if __name__ == "__main__":
    main()
