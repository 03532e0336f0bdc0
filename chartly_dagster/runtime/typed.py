"""Envelope Parquet file -> typed Parquet file, batch by batch.

Each window's `raw` JSON becomes typed columns next to the envelope's join columns. The
file is read twice in batches (infer, then convert) when columns are inferred, once when
they are declared; only one batch of parsed records is alive at a time. Values that do not
convert to a declared type become null and are counted, with row samples, for the drift
check to judge.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..core.columns import (
    JOIN_COLUMNS,
    ColumnType,
    ConversionError,
    SchemaInference,
    convert_value,
    kind_of,
    merge_kinds,
    parse_column_type,
)
from ..core.profile import ColumnSpec

BATCH_ROWS = 32 * 1024
ERROR_SAMPLES = 5
PARTITION_FIELD = "window"
_TS = pa.timestamp("us", tz="UTC")
_JOIN_FIELDS = [pa.field(name, _TS if name in ("occurred_at", "window_start", "window_end")
                         else pa.string(), nullable=False) for name in JOIN_COLUMNS]
_MISSING = object()


@dataclass(frozen=True)
class TypedColumn:
    """One output column: name, record path, type (and timestamp format), description."""

    name: str
    path: tuple[str, ...]
    type: ColumnType
    format: str = "rfc3339"
    nullable: bool = True
    description: str = ""


def declared_columns(specs: Sequence[ColumnSpec]) -> list[TypedColumn]:
    """A profile's `records.columns`, in declaration order."""
    return [TypedColumn(spec.name, tuple((spec.source or spec.name).split(".")),
                        parse_column_type(spec.type), spec.format or "rfc3339",
                        spec.nullable, spec.description) for spec in specs]


def arrow_type(column_type: ColumnType) -> pa.DataType:
    """The Arrow type a declared or inferred column is stored as."""
    return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
            "bool": pa.bool_(), "timestamp": _TS, "date": pa.date32(),
            "json": pa.string()}.get(column_type.name) or pa.decimal128(
                column_type.precision, column_type.scale)


def typed_schema(columns: Sequence[TypedColumn]) -> pa.Schema:
    """Join columns first, then the typed columns in their documented order."""
    return pa.schema([*_JOIN_FIELDS, *(pa.field(c.name, arrow_type(c.type), nullable=True,
                                                metadata={"description": c.description}
                                                if c.description else None)
                                       for c in columns)])


def _open(uri: str, mode: str) -> Any:
    filesystem, path = fsspec.core.url_to_fs(uri)
    if "w" in mode:
        filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return filesystem, path, filesystem.open(path, mode)


def _envelope_batches(uri: str) -> Iterator[pa.RecordBatch]:
    _, _, handle = _open(uri, "rb")
    with handle:
        yield from pq.ParquetFile(handle).iter_batches(
            batch_size=BATCH_ROWS, columns=[*JOIN_COLUMNS, "raw"])


def _records(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    return [orjson.loads(text) for text in batch.column("raw").to_pylist()]


def infer_window_columns(uri: str) -> list[TypedColumn]:
    """First pass: the inferred schema of one envelope file, one batch in memory at a time."""
    inference = SchemaInference()
    for batch in _envelope_batches(uri):
        for record in _records(batch):
            inference.observe(record)
    return [TypedColumn(c.name, c.path, ColumnType(c.kind)) for c in inference.columns()]


def _value(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


@dataclass
class ColumnReport:
    """What one column saw in a window: kinds observed, conversion errors with samples."""

    kind: str = "null"
    missing: int = 0
    errors: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "missing": self.missing, "errors": self.errors,
                "samples": self.samples}


@dataclass(frozen=True)
class TypedWindow:
    """One typed partition file and what typing it observed."""

    uri: str
    rows: int
    columns: tuple[TypedColumn, ...]
    schema: pa.Schema
    report: dict[str, ColumnReport]

    @property
    def observed(self) -> dict[str, str]:
        """Column name -> observed kind: what the drift check compares between partitions."""
        return {name: report.kind for name, report in sorted(self.report.items())}

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.report.values())


def _convert_column(column: TypedColumn, records: list[dict[str, Any]], ids: list[str],
                    report: ColumnReport) -> pa.Array:
    out: list[Any] = []
    append = out.append
    for index, record in enumerate(records):
        value = _value(record, column.path)
        if value is _MISSING or value is None:
            report.missing += value is _MISSING
            append(None)
            if not column.nullable:
                _error(report, ids[index], value, "null or missing in a non-nullable column")
            continue
        report.kind = merge_kinds(report.kind, kind_of(value) if not isinstance(
            value, dict | list) else "json")
        try:
            append(convert_value(value, column.type, column.format))
        except ConversionError as exc:
            append(None)
            _error(report, ids[index], value, str(exc))
    return pa.array(out, type=arrow_type(column.type))


def _error(report: ColumnReport, event_id: str, value: Any, message: str) -> None:
    report.errors += 1
    if len(report.samples) < ERROR_SAMPLES:
        shown = None if value is _MISSING else orjson.dumps(value).decode()[:80]
        report.samples.append({"event_id": event_id, "value": shown, "error": message})


def partition_path(window_start: str) -> str:
    """The Hive-style folder of one window: `window=<RFC3339 start>`."""
    return f"{PARTITION_FIELD}={window_start}"


def type_window(source_uri: str, target_uri: str,
                declared: Sequence[TypedColumn] | None = None) -> TypedWindow:
    """Type one envelope file into `target_uri` (written to a temp name, then moved).

    `declared` None infers the columns from this window's records first.
    """
    columns = list(declared) if declared is not None else infer_window_columns(source_uri)
    schema = typed_schema(columns)
    report = {c.name: ColumnReport() for c in columns}
    filesystem, final, _ = _open(target_uri, "wb")
    tmp = f"{final.rsplit('/', 1)[0]}/.{uuid.uuid4().hex}.tmp"
    rows = 0
    try:
        with filesystem.open(tmp, "wb") as handle, pq.ParquetWriter(
                handle, schema, compression="snappy") as writer:
            for batch in _envelope_batches(source_uri):
                records = _records(batch)
                ids = batch.column("event_id").to_pylist()
                arrays = [batch.column(name) for name in JOIN_COLUMNS]
                arrays += [_convert_column(c, records, ids, report[c.name]) for c in columns]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
        filesystem.mv(tmp, final)
    finally:
        if filesystem.exists(tmp):
            filesystem.rm(tmp)
    return TypedWindow(target_uri, rows, tuple(columns), schema, report)


def typed_dataset(root: str) -> ds.Dataset:
    """Every typed partition under `root` as one dataset, schemas unified by name.

    A column inferred as int64 in one window and float64 in another reads as float64; any
    other disagreement reads as text, following the inference rule.
    """
    filesystem, path = fsspec.core.url_to_fs(root)
    files = sorted(f for f in filesystem.find(path) if f.endswith(".parquet"))
    merged: dict[str, pa.Field] = {}
    for name in files:
        with filesystem.open(name, "rb") as handle:
            for fld in pq.read_schema(handle):
                known = merged.get(fld.name)
                if known is None or known.type == fld.type:
                    merged[fld.name] = fld
                elif {str(known.type), str(fld.type)} == {"int64", "double"}:
                    merged[fld.name] = fld.with_type(pa.float64())
                else:
                    merged[fld.name] = fld.with_type(pa.string())
    merged[PARTITION_FIELD] = pa.field(PARTITION_FIELD, pa.string())
    return ds.dataset(files, schema=pa.schema(list(merged.values())), filesystem=filesystem,
                      format="parquet", partitioning="hive", partition_base_dir=path)
