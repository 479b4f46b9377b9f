"""``backtest``: labelled history → engine replay → metrics and files, as one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fraudstream.backtest.evaluate import Evaluation, evaluate
from fraudstream.backtest.output import render, write_metrics, write_plots, write_records
from fraudstream.backtest.run import BacktestRun, ThroughKafka, run_in_process, run_through_kafka
from fraudstream.core.engine import Serving
from fraudstream.core.messages import Routing, Transaction
from fraudstream.core.policy import NO_POLICY, Policy
from fraudstream.core.replay import LabelEvent
from fraudstream.core.rules import NO_RULES, RuleSet

Row = tuple[Transaction, bool] | tuple[Transaction, bool, str | None]


def serving_for(models_dir: Path, champion: str, challenger: str | None, share: float,
                shadow: bool, policy: Policy = NO_POLICY,
                rules: RuleSet = NO_RULES) -> Serving:  # fmt: skip
    from fraudstream.app.serving import load_served

    models = {champion: load_served(models_dir, champion)}
    if challenger:
        models[challenger] = load_served(models_dir, challenger)
    routing = Routing(
        champion=champion,
        challenger=challenger,
        challenger_share=share if challenger else 0.0,
        shadow=bool(challenger) and (shadow or share == 0.0),
    )
    return Serving(routing, models, policy, rules)


def backtest_rows(
    rows: Sequence[Row],
    labels: Sequence[LabelEvent],
    versions: Sequence[str],
    models_dir: Path,
    *,
    share: float = 0.0,
    shadow: bool = True,
    start: float | None = None,
    end: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    through: ThroughKafka | None = None,
    policy: Policy = NO_POLICY,
    rules: RuleSet = NO_RULES,
) -> BacktestRun:
    """One replay per challenger (the champion decides in every one; the first replay's
    decisions are kept): every version scores the transactions in ``[start, end)``. With
    ``through``, live workers on a broker score it instead (one champion and at most one
    challenger, in one run). ``policy`` and ``rules`` decide as a worker with them in force
    does (in process only: live workers follow fraud.control)."""
    if not versions:
        raise ValueError("name at least one model version")
    if through is not None and (policy.version or rules.version):
        raise ValueError(
            "--policy/--rules apply in process only: a live worker decides under what "
            "fraud.control holds (`fraudstream policy set`, `fraudstream rules set`)"
        )

    def keep(tx: Transaction) -> bool:
        return (start is None or tx.ts >= start) and (end is None or tx.ts < end)

    champion = versions[0]
    if through is not None:
        return run_through_kafka(
            rows, labels, versions, models_dir, share, shadow, keep, through, progress
        )
    others: list[str | None] = [*versions[1:]] or [None]
    merged: BacktestRun | None = None
    for challenger in others:
        serving = serving_for(models_dir, champion, challenger, share, shadow, policy, rules)
        run = run_in_process(rows, labels, serving, keep=keep, progress=progress)
        if merged is None:
            merged = run
        else:  # a later pass adds its challenger's scores only
            merged.scores.extend(s for s in run.scores if s.model_version == challenger)
    assert merged is not None
    return merged


def backtest_file(
    path: Path,
    versions: Sequence[str],
    *,
    models_dir: Path | None = None,
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
    naive_utc: bool = False,
    label_delay_days: float | None = None,
    share: float = 0.0,
    shadow: bool = True,
    start: float | None = None,
    end: float | None = None,
    known_since: float | None = None,
    card_k: int = 100,
    out: Path = Path("backtest-out"),
    progress: Callable[[int, int], None] | None = None,
    through: ThroughKafka | None = None,
    policy: Policy = NO_POLICY,
    rules: RuleSet = NO_RULES,
) -> dict[str, Any]:
    from fraudstream.settings import get_settings
    from fraudstream.sim.files import read_labelled_file
    from fraudstream.train.dataset import label_events

    lf = read_labelled_file(path, mapping, constants=constants, naive_utc=naive_utc, until=end)
    labels = label_events(lf.rows, lf.arrivals, None if lf.arrivals else label_delay_days)
    run = backtest_rows(
        lf.rows,
        labels,
        versions,
        models_dir or get_settings().models_dir,
        share=share,
        shadow=shadow,
        start=start,
        end=end,
        progress=progress,
        through=through,
        policy=policy,
        rules=rules,
    )
    source = str(path) if through is None else f"{path} through Kafka ({through.bootstrap})"
    return report(run, out, known_since=known_since, card_k=card_k, source=source)


def report(
    run: BacktestRun, out: Path, *, known_since: float | None, card_k: int, source: str
) -> dict[str, Any]:
    """Evaluate, write every file into ``out`` and render the printed report."""
    ev: Evaluation = evaluate(run, known_since=known_since, card_k=card_k)
    files: dict[str, Any] = dict(write_records(run, out))
    plots = write_plots(ev, out)
    text = render(ev, card_k)
    if isinstance(plots, str):
        text += "\n" + plots
    else:
        files.update({f"plot {v}": p for v, p in plots.items()})
    files["metrics"] = write_metrics(
        ev, run, out, {"source": source, "known_fraud_since": known_since, "card_k": card_k}
    )
    (out / "report.txt").write_text(text + "\n")
    files["report"] = out / "report.txt"
    return {"text": text, "files": files, "evaluation": ev, "run": run}
