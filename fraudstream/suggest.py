"""`fraudstream policy suggest`: thresholds from a file of scored, labelled rows.

The file is Parquet or CSV with one row per (transaction, model version) and at least the
columns ``model_version``, ``score``, ``is_fraud`` and ``amount``; ``currency`` and ``channel``
are used when present. ``fraudstream outcomes export`` writes such a file (its rows without a
label yet have an empty ``is_fraud``), and so can a backtest. The choice itself is pure
(``core/thresholds.py``); this module reads, converts money and renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fraudstream.core.money import Rates
from fraudstream.core.policy import Policy
from fraudstream.core.thresholds import Chooser, Costs, Line, by_cost, by_flag_rate, suggest
from fraudstream.errors import ConfigError

REQUIRED = ("model_version", "score", "is_fraud", "amount")
Unlabelled = Literal["exclude", "genuine"]


@dataclass(frozen=True, slots=True)
class Suggestion:
    policy: Policy
    lines: list[Line]
    rows_used: int
    rows_unlabelled: int
    currency: str  # the currency money is counted in ("" when chosen by flag rate)


def read_rows(path: Path) -> dict[str, Any]:
    """The file's columns as Python lists (Parquet by its magic bytes, else CSV)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        is_parquet = fh.read(4) == b"PAR1"
    table = pq.read_table(path) if is_parquet else pacsv.read_csv(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"{path} has no column(s) {', '.join(missing)}; it needs {', '.join(REQUIRED)} "
            "(as `fraudstream outcomes export` writes them)"
        )
    return {name: table.column(name).to_pylist() for name in table.column_names}


def suggest_from_rows(
    cols: dict[str, Any],
    *,
    costs: Costs | None,
    review_rate: float,
    decline_rate: float,
    band_edges: tuple[float, ...],
    by_channel: bool,
    min_frauds: int,
    unlabelled: Unlabelled,
    rates: Rates | None,
    note: str,
) -> Suggestion:
    labels = cols["is_fraud"]
    keep = [
        i
        for i, (label, score) in enumerate(zip(labels, cols["score"], strict=True))
        if score is not None and (label is not None or unlabelled == "genuine")
    ]
    if not keep:
        raise ConfigError("no row has both a score and a label; nothing to choose from")

    def take(name: str) -> list[Any]:
        column = cols[name]
        return [column[i] for i in keep]

    versions = np.asarray(take("model_version"), dtype=np.str_)
    scores = np.asarray(take("score"), dtype=np.float64)
    is_fraud = np.asarray([bool(x) for x in take("is_fraud")], dtype=bool)
    amounts = np.asarray(take("amount"), dtype=np.float64)
    channels = None
    if by_channel:
        if "channel" not in cols:
            raise ConfigError("--by-channel needs a `channel` column in the file")
        channels = np.asarray(take("channel"), dtype=object)
    money, currency = _money(amounts, take("currency") if "currency" in cols else None, rates)
    models, lines = suggest(
        versions,
        scores,
        is_fraud,
        amounts,
        channels,
        _chooser(costs, review_rate, decline_rate),
        losses=money,
        band_edges=band_edges,
        min_frauds=min_frauds,
    )
    policy = Policy(version=1, models=models, note=note)
    return Suggestion(policy, lines, len(keep), len(labels) - len(keep), currency if costs else "")


def _money(
    amounts: npt.NDArray[np.float64], currencies: list[str] | None, rates: Rates | None
) -> tuple[npt.NDArray[np.float64], str]:
    """Amounts in one currency for the fraud loss: converted with ``rates``, or refused when the
    file mixes currencies and no rates are given (never added as they come)."""
    found = sorted({c for c in currencies or () if c})
    if rates is not None:
        rates.check_covers(found)
        factor = np.asarray([rates.rate(c) for c in currencies or ()], dtype=np.float64)
        return (amounts * factor if currencies else amounts), rates.base
    if len(found) > 1:
        raise ConfigError(
            f"the rows are in several currencies ({', '.join(found)}): give --rates "
            '(JSON {"base": "EUR", "rates": {"GBP": 1.17, ...}}) to count fraud losses in one'
        )
    return amounts, found[0] if found else ""


def _chooser(costs: Costs | None, review_rate: float, decline_rate: float) -> Chooser:
    if costs is None:
        return lambda s, f, a: by_flag_rate(s, f, review_rate, decline_rate)
    return lambda s, f, a: by_cost(s, f, a, costs)


def render(sug: Suggestion, costs: Costs | None) -> str:
    head = (
        f"{'model version':16s} {'segment':18s} {'rows':>8s} {'frauds':>7s} {'review':>8s} "
        f"{'decline':>8s} {'flag %':>7s} {'recall':>7s}" + (f" {'cost':>14s}" if costs else "")
    )
    out = [head]
    for line in sug.lines:
        name = "(all)" if line.segment is None else line.segment.name
        c = line.choice
        if c is None:
            out.append(
                f"{line.model_version:16s} {name:18s} {line.rows:8d} {line.frauds:7d}   "
                "too few frauds: keeps the version's thresholds"
            )
            continue
        t = c.thresholds
        cost = f" {c.cost:14,.2f}" if costs and c.cost is not None else ""
        out.append(
            f"{line.model_version:16s} {name:18s} {c.rows:8d} {c.frauds:7d} {t.review:8.4f} "
            f"{t.decline:8.4f} {c.flag_rate * 100:7.3f} {c.recall * 100:6.1f}%{cost}"
        )
    basis = (
        f"least cost (review {costs.review:g}, declined genuine {costs.decline_good:g}, fraud "
        f"loss = amount; in {sug.currency or 'the rows currency'})"
        if costs
        else "flag rates"
    )
    out.append(
        f"chosen by {basis} on {sug.rows_used:,} labelled rows "
        f"({sug.rows_unlabelled:,} without a label left out)"
    )
    return "\n".join(out)
