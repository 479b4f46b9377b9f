"""`fraudstream outcomes export`: decisions joined with outcomes and scores, to Parquet or CSV.

One row per transaction and model version (``core.ledger.Row``): the deciding model's row and,
in shadow mode, the shadow's, with the decision, score, amount, currency, decision time and,
once labelled, the label, outcome and label time. Readable as is by DuckDB, pandas, Spark:

    SELECT model_version, variant, outcome, count(*) FROM 'outcomes.parquet' GROUP BY ALL;

Written to a temporary file beside ``out`` and renamed into place when complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from fraudstream.core.ledger import Row, parse_ts, parse_when
from fraudstream.settings import Settings

Format = Literal["parquet", "csv"]
BATCH_ROWS = 50_000

# Column name and type. Stable: analysts' queries key on them (add columns, never rename).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("transaction_id", "string"),
    ("card_id", "string"),
    ("model_version", "string"),
    ("variant", "string"),
    ("decider_version", "string"),
    ("decision", "string"),
    ("score", "float64"),
    ("amount", "float64"),
    ("currency", "string"),
    ("decided_at", "timestamp"),
    ("is_fraud", "bool"),
    ("outcome", "string"),
    ("labelled_at", "timestamp"),
    ("source", "string"),
)


def _schema() -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
    }
    return pa.schema([pa.field(name, types[kind]) for name, kind in COLUMNS])


def _ms(text: str | None) -> int | None:
    ts = parse_ts(text)
    return None if ts is None else round(ts * 1000)


def _columns(rows: list[Row]) -> dict[str, list[Any]]:
    return {
        "transaction_id": [r.transaction_id for r in rows],
        "card_id": [r.card_id or None for r in rows],
        "model_version": [r.model_version for r in rows],
        "variant": [r.variant for r in rows],
        "decider_version": [r.decider_version for r in rows],
        "decision": [r.decision for r in rows],
        "score": [r.score for r in rows],
        "amount": [r.amount for r in rows],
        "currency": [r.currency for r in rows],
        "decided_at": [_ms(r.decided_at) for r in rows],
        "is_fraud": [r.is_fraud for r in rows],
        "outcome": [r.outcome for r in rows],
        "labelled_at": [_ms(r.labelled_at) for r in rows],
        "source": [r.source for r in rows],
    }


def write_rows(rows: Iterable[Row], fmt: Format, out: Path) -> int:
    """Write ``rows`` to ``out`` (complete or not at all); returns how many were written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = _schema()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n = 0
    try:
        writer: Any = (
            pq.ParquetWriter(tmp, schema, compression="zstd")
            if fmt == "parquet"
            else pacsv.CSVWriter(tmp, schema)
        )
        with writer:
            it = iter(rows)
            while batch := list(islice(it, BATCH_ROWS)):
                writer.write_table(pa.Table.from_pydict(_columns(batch), schema=schema))
                n += len(batch)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


@dataclass(frozen=True, slots=True)
class Exported:
    rows: int
    path: Path
    since: float | None
    until: float | None


def in_window(rows: Iterable[Row], since: float | None, until: float | None) -> Iterator[Row]:
    """Rows decided in [since, until); rows without a decision time only when neither is set."""
    for r in rows:
        t = parse_ts(r.decided_at)
        if t is None:
            if since is None and until is None:
                yield r
            continue
        if (since is None or t >= since) and (until is None or t < until):
            yield r


def export(
    settings: Settings, since: str | None, until: str | None, fmt: Format, out: Path
) -> Exported:
    from fraudstream.kafka.history import load_latest_outcomes, read_rows

    now = time.time()
    t0 = None if since is None else parse_when(since, now)
    t1 = None if until is None else parse_when(until, now)
    rows, _ = read_rows(settings, load_latest_outcomes(settings), t0, t1)
    n = write_rows(in_window(rows, t0, t1), fmt, out)
    return Exported(n, out, t0, t1)
