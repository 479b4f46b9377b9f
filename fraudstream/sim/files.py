"""Labelled transaction files (CSV or Parquet): write simulated ones, read real ones for training.

A file has one row per transaction with the contract's Transaction fields (``transaction_id``,
``card_id``, ``merchant_id``, ``amount``, ``currency``, ``event_time`` RFC 3339 with offset, and
optionally ``mcc``, ``country``, ``channel``, ``device_id``) and a label column ``is_fraud``
(true/false, 1/0, yes/no). Files with other column names are read with a mapping
``{target_field: source_column}``; unmapped fields keep their own names. The format follows the
extension: ``.parquet``/``.pq`` or ``.csv`` (optionally ``.csv.gz``).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from fraudstream.core.messages import Transaction
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
) -> int:
    """Write events (e.g. from ``generator.generate``) to CSV or Parquet; returns the row count."""
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


def read_labelled(
    path: Path | str, mapping: Mapping[str, str] | None = None
) -> list[tuple[Transaction, bool]]:
    """Transactions and labels from a labelled file; ``mapping`` is target field → column.

    Raises ``InvalidMessage`` naming the row (1 = first data row) and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such labelled file")
    cols = {f: f for f in (*TX_FIELDS, LABEL)}
    if mapping:
        unknown = set(mapping) - set(cols)
        if unknown:
            raise ValueError(
                f"mapping names unknown target fields {sorted(unknown)}; known: {sorted(cols)}"
            )
        cols.update(mapping)
    out: list[tuple[Transaction, bool]] = []
    for line, row in enumerate(_rows(p), start=1):
        if line == 1:
            missing = [
                f"{f} (column {cols[f]!r})" for f in (*REQUIRED, LABEL) if cols[f] not in row
            ]
            if missing:
                raise InvalidMessage(
                    "missing_column",
                    f"{p}: missing {', '.join(missing)}; map them with target=column",
                )
        out.append((_transaction(row, cols, line), _label(row[cols[LABEL]], line)))
    return out


def _transaction(row: Mapping[str, Any], cols: Mapping[str, str], line: int) -> Transaction:
    get = row.get
    try:
        for f in REQUIRED:
            if get(cols[f]) in (None, ""):
                raise ValueError(f"{f} is empty")
        when = get(cols["event_time"])
        if isinstance(when, datetime):
            dt = when
            when = dt.isoformat()
        else:
            when = str(when).strip()
            dt = datetime.fromisoformat(when)
        if dt.tzinfo is None:
            raise ValueError(f"event_time {when!r} has no UTC offset")
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
