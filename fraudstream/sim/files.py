"""Labelled transaction files (CSV or Parquet): write simulated ones, read real ones for training.

A file has one row per transaction with the contract's Transaction fields (``transaction_id``,
``card_id``, ``merchant_id``, ``amount``, ``currency``, ``event_time`` RFC 3339 with offset, and
optionally ``mcc``, ``country``, ``channel``, ``device_id``) and a label column ``is_fraud``
(true/false, 1/0, yes/no). Files with other column names are read with a mapping
``{target_field: source_column}``; unmapped fields keep their own names. Optional columns:
``fraud_kind`` (what kind of fraud, for per-kind reports) and ``reported_at`` (when the label
arrived; RFC 3339). The format follows the extension: ``.parquet``/``.pq`` or ``.csv``
(optionally ``.csv.gz``).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from fraudstream.core.messages import Transaction
from fraudstream.core.replay import LabelEvent
from fraudstream.errors import InvalidMessage

TX_FIELDS = (
    "transaction_id",
    "card_id",
    "merchant_id",
    "amount",
    "currency",
    "event_time",
    "mcc",
    "country",
    "channel",
    "device_id",
)
REQUIRED = TX_FIELDS[:6]
LABEL = "is_fraud"
KIND = "fraud_kind"
REPORTED_AT = "reported_at"
_TRUE = frozenset({"true", "1", "yes", "y", "t", "fraud"})
_FALSE = frozenset({"false", "0", "no", "n", "f", "legit", "genuine", ""})


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise ValueError(f"{path}: unknown file type; use .csv, .csv.gz or .parquet")


def write_labelled(
    path: Path | str,
    events: Iterable[tuple[Transaction, bool] | tuple[Transaction, bool, str | None]],
    *,
    with_kind: bool = True,
    reported_at: Mapping[str, float] | None = None,
) -> int:
    """Write events (e.g. from ``generator.generate``) to CSV or Parquet; returns the row count.
    ``reported_at`` (transaction_id → POSIX time) adds the labels' arrival column (empty where a
    transaction has none: its label never arrived)."""
    p = Path(path)
    fmt = _format(p)
    cols: dict[str, list[Any]] = {name: [] for name in (*TX_FIELDS, LABEL)}
    kinds: list[str | None] = []
    for ev in events:
        tx = ev[0]
        for name in TX_FIELDS:
            cols[name].append(getattr(tx, name))
        cols[LABEL].append(bool(ev[1]))
        kinds.append(ev[2] if len(ev) > 2 else None)
    if with_kind:
        cols[KIND] = kinds
    if reported_at is not None:
        cols[REPORTED_AT] = [
            None if (at := reported_at.get(i)) is None else _rfc3339(at)
            for i in cols["transaction_id"]
        ]
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"amount": pa.float64(), "mcc": pa.int32(), LABEL: pa.bool_()}
        table = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})
        pq.write_table(table, p, compression="zstd")
    else:
        names = list(cols)
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "wt", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            for row in zip(*(cols[n] for n in names), strict=True):
                w.writerow([_cell(v) for v in row])
    return len(kinds)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact form: the file reads back to the same float
    return value


def _rows(path: Path) -> Iterator[Mapping[str, Any]]:
    if _format(path) == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for batch in table.to_batches(max_chunksize=65536):
            yield from batch.to_pylist()
        return
    gz = path.name.lower().endswith(".gz")
    with gzip.open(path, "rb") if gz else path.open("rb") as binary:
        text: IO[str] = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        yield from csv.DictReader(text)


def _label(value: Any, line: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidMessage("bad_label", f"row {line}: label {value!r} is not true/false or 1/0")


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(slots=True)
class LabelledFile:
    """What a labelled file holds: (transaction, is_fraud, kind) rows and, when the file has a
    ``reported_at`` column, when each label arrived (an empty cell: the label never arrived)."""

    rows: list[tuple[Transaction, bool, str | None]]
    arrivals: list[LabelEvent] | None


def read_labelled(
    path: Path | str, mapping: Mapping[str, str] | None = None
) -> list[tuple[Transaction, bool]]:
    """Transactions and labels from a labelled file; ``mapping`` is target field → column.

    Raises ``InvalidMessage`` naming the row (1 = first data row) and the problem.
    """
    return [(r[0], r[1]) for r in read_labelled_file(path, mapping).rows]


def read_labelled_file(
    path: Path | str,
    mapping: Mapping[str, str] | None = None,
    *,
    constants: Mapping[str, str] | None = None,
    naive_utc: bool = False,
    until: float | None = None,
) -> LabelledFile:
    """Like :func:`read_labelled`, with more: ``constants`` gives a field one value for every
    row (e.g. ``currency=EUR`` for a file without currencies); ``naive_utc`` reads event times
    without a UTC offset as UTC (otherwise they are refused); ``until`` keeps only transactions
    before that POSIX time; a mapped ``fraud_kind`` column is kept for per-kind reports, a
    ``reported_at`` column gives the labels' arrival times."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such labelled file")
    fields = (*TX_FIELDS, LABEL, KIND, REPORTED_AT)
    cols = {f: f for f in fields}
    consts = dict(constants or {})
    unknown = (set(mapping or {}) | set(consts)) - set(cols)
    if unknown:
        raise ValueError(
            f"mapping names unknown target fields {sorted(unknown)}; known: {sorted(cols)}"
        )
    cols.update(mapping or {})
    for f in consts:
        cols[f] = "\0const:" + f
    out: list[tuple[Transaction, bool, str | None]] = []
    arrivals: list[LabelEvent] | None = None
    for line, raw in enumerate(_rows(p), start=1):
        row: Mapping[str, Any] = raw
        if consts:
            row = {**raw, **{cols[f]: v for f, v in consts.items()}}
        if line == 1:
            missing = [
                f"{f} (column {cols[f]!r})" for f in (*REQUIRED, LABEL) if cols[f] not in row
            ]
            if missing:
                raise InvalidMessage(
                    "missing_column",
                    f"{p}: missing {', '.join(missing)}; map them with target=column "
                    "(or give a constant)",
                )
            if cols[REPORTED_AT] in row:
                arrivals = []
        tx = _transaction(row, cols, line, naive_utc)
        if until is not None and tx.ts >= until:
            continue
        is_fraud = _label(row[cols[LABEL]], line)
        kind = _opt_str(row.get(cols[KIND])) if is_fraud else None
        out.append((tx, is_fraud, kind))
        if arrivals is not None:
            at = row.get(cols[REPORTED_AT])
            if at not in (None, ""):
                arrivals.append(
                    LabelEvent(
                        tx.transaction_id, _time(at, line, naive_utc, "reported_at"), is_fraud
                    )
                )
    return LabelledFile(out, arrivals)


def _time(value: Any, line: int, naive_utc: bool, what: str) -> float:
    try:
        dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise InvalidMessage("bad_row", f"row {line}: {what} {value!r}: {exc}") from exc
    if dt.tzinfo is None:
        if not naive_utc:
            raise InvalidMessage(
                "bad_row", f"row {line}: {what} {value!r} has no UTC offset (or say --naive-utc)"
            )
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _transaction(
    row: Mapping[str, Any], cols: Mapping[str, str], line: int, naive_utc: bool = False
) -> Transaction:
    get = row.get
    try:
        for f in REQUIRED:
            if get(cols[f]) in (None, ""):
                raise ValueError(f"{f} is empty")
        when = get(cols["event_time"])
        dt = when if isinstance(when, datetime) else datetime.fromisoformat(str(when).strip())
        if dt.tzinfo is None:
            if not naive_utc:
                raise ValueError(
                    f"event_time {str(when).strip()!r} has no UTC offset (if the file's times are "
                    "UTC, say so: --naive-utc)"
                )
            dt = dt.replace(tzinfo=UTC)
        when = dt.isoformat() if isinstance(when, datetime) or naive_utc else str(when).strip()
        offset = dt.utcoffset()
        amount = float(str(get(cols["amount"])))
        if not 0.0 <= amount < 1e12:
            raise ValueError(f"amount {amount!r} is negative or not finite")
        mcc_raw = get(cols["mcc"])
        mcc = None if mcc_raw in (None, "") else int(float(mcc_raw))
        return Transaction(
            transaction_id=str(get(cols["transaction_id"])),
            card_id=str(get(cols["card_id"])),
            merchant_id=str(get(cols["merchant_id"])),
            amount=amount,
            currency=str(get(cols["currency"])).strip().upper(),
            event_time=when,
            ts=dt.timestamp(),
            utc_offset_s=int(offset.total_seconds()) if offset is not None else 0,
            mcc=mcc,
            country=_opt_str(get(cols["country"])),
            channel=_opt_str(get(cols["channel"])),
            device_id=_opt_str(get(cols["device_id"])),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("bad_row", f"row {line}: {exc}") from exc
