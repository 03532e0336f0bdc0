"""Envelope Parquet file -> typed Parquet file, batch by batch.

Each window's `raw` JSON becomes typed columns next to the envelope's join columns. The
file is read twice in batches (infer, then convert) when columns are inferred, once when
they are declared; only one batch is alive at a time. Batches go through Arrow's JSON
reader and vectorized casts; a batch Arrow refuses (mixed types, json columns, values that
do not convert) is converted record by record with the same rules, so the fast path never
changes a result. Values that do not convert to a declared type become null and are
counted, with row samples, for the drift check to judge.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pj
import pyarrow.parquet as pq

from ..core.columns import (
    JOIN_COLUMNS,
    ColumnType,
    ConversionError,
    SchemaInference,
    convert_value,
    parse_column_type,
)
from ..core.profile import ColumnSpec
from .envelope.schema import string_offsets
from .storage import ROW_GROUP_ROWS, Storage, iter_window_batches

if TYPE_CHECKING:  # imported where used: pyarrow.dataset loads pandas (~50 MB per process)
    import pyarrow.dataset as ds

BATCH_ROWS = ROW_GROUP_ROWS
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


def _envelope_batches(uri: str, *, raw_only: bool = False) -> Iterator[pa.RecordBatch]:
    return iter_window_batches(uri, BATCH_ROWS,
                               columns=["raw"] if raw_only else [*JOIN_COLUMNS, "raw"])


def _records(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    return [orjson.loads(text) for text in batch.column("raw").to_pylist()]


class _NeedsRecords(Exception):
    """This batch needs the exact per-record path (mixed types, json columns, bad values)."""


def _ndjson(raw: pa.Array) -> pa.BufferReader:
    """The batch's `raw` texts as one newline-delimited buffer, without a Python string."""
    joined = pc.binary_join_element_wise(raw, "", "\n")
    offsets = string_offsets(joined)
    data = joined.buffers()[2]
    return pa.BufferReader(data.slice(int(offsets[0]), int(offsets[-1] - offsets[0])))


def _read_json(batch: pa.RecordBatch, schema: pa.Schema | None = None) -> pa.Table:
    options = None if schema is None else pj.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(_ndjson(batch.column("raw")), parse_options=options,
                             read_options=pj.ReadOptions(block_size=1 << 26))
    except pa.ArrowInvalid as exc:
        raise _NeedsRecords from exc
    if table.num_rows != batch.num_rows:
        raise _NeedsRecords
    return table


def _arrow_kinds(fields: Iterable[pa.Field], prefix: tuple[str, ...],
                 inference: SchemaInference) -> None:
    """Feed Arrow's inferred types to the inference as the rule's kinds."""
    for fld in fields:
        path, kind = (*prefix, fld.name), fld.type
        if pa.types.is_struct(kind):
            inference.observe_object(path)
            _arrow_kinds(kind, path, inference)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            inference.observe_field(path, "json")
        elif pa.types.is_null(kind):
            inference.observe_field(path, "null")
        elif pa.types.is_boolean(kind):
            inference.observe_field(path, "bool")
        elif pa.types.is_integer(kind):
            inference.observe_field(path, "int64")
        elif pa.types.is_floating(kind):
            inference.observe_field(path, "float64")
        else:  # strings, and strings Arrow took for timestamps: the rule never guesses
            inference.observe_field(path, "string")


def infer_window_columns(uri: str) -> list[TypedColumn]:
    """First pass: the inferred schema of one envelope file, one batch in memory at a time.

    Arrow's JSON reader types a batch in C++; a batch it refuses (a field that is a number
    in one record and text in another) is walked record by record. Both feed the same rule.
    """
    inference = SchemaInference()
    for batch in _envelope_batches(uri, raw_only=True):
        try:
            table = _read_json(batch)
        except _NeedsRecords:
            for record in _records(batch):
                inference.observe(record)
            continue
        _arrow_kinds(table.schema, (), inference)
    return [TypedColumn(c.name, c.path, ColumnType(c.kind)) for c in inference.columns()]


def _read_type(column: TypedColumn) -> pa.DataType | None:
    """What Arrow's JSON reader reads a column's source as (None: only per record)."""
    name = column.type.name
    if name == "json":
        return None
    if name == "timestamp":
        return pa.string() if column.format == "rfc3339" else pa.float64()
    if name == "date":
        return pa.string()
    return arrow_type(column.type)


def read_schema(columns: Sequence[TypedColumn]) -> pa.Schema | None:
    """The explicit schema that reads every column's source path, or None if none can."""
    tree: dict[str, Any] = {}
    for column in columns:
        leaf_type = _read_type(column)
        if leaf_type is None:
            return None
        node = tree
        for part in column.path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                return None
        known = node.setdefault(column.path[-1], leaf_type)
        if known != leaf_type:  # two columns read one path differently, or a path is a node
            return None

    def fields(node: dict[str, Any]) -> list[pa.Field]:
        return [pa.field(k, pa.struct(fields(v)) if isinstance(v, dict) else v)
                for k, v in node.items()]

    return pa.schema(fields(tree))


def _finish(array: pa.Array, column: TypedColumn) -> pa.Array:
    name = column.type.name
    if name == "timestamp" and column.format == "rfc3339":
        return pc.cast(array, _TS)
    if name == "timestamp":
        scale = 1_000 if column.format == "epoch_ms" else 1_000_000
        micros = pc.round(pc.multiply(array, float(scale)))
        return pc.cast(pc.cast(micros, pa.int64()), _TS)
    if name == "date":
        return pc.cast(array, pa.date32())
    return array


def _arrow_columns(batch: pa.RecordBatch, columns: Sequence[TypedColumn],
                   schema: pa.Schema | None) -> list[pa.Array]:
    """Every column of one batch through Arrow's JSON reader and vectorized casts."""
    if schema is None:
        raise _NeedsRecords
    table = _read_json(batch, schema)
    out = []
    for column in columns:
        array: Any = table.column(column.path[0])
        for part in column.path[1:]:
            array = pc.struct_field(array, part)
        try:
            array = _finish(array.combine_chunks(), column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _NeedsRecords from exc
        if not column.nullable and array.null_count:
            raise _NeedsRecords
        out.append(array)
    return out


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
    """What one column saw in a window: nulls, and values that did not convert (samples)."""

    nulls: int = 0
    errors: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"nulls": self.nulls, "errors": self.errors, "samples": self.samples}


@dataclass(frozen=True)
class TypedWindow:
    """One typed partition file and what typing it observed."""

    uri: str
    rows: int
    columns: tuple[TypedColumn, ...]
    report: dict[str, ColumnReport]

    @property
    def observed(self) -> dict[str, str]:
        """Column name -> type: what the drift check compares between partitions."""
        return {c.name: str(c.type) for c in sorted(self.columns, key=lambda c: c.name)}

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.report.values())


def _record_column(column: TypedColumn, records: list[dict[str, Any]], ids: list[str],
                   report: ColumnReport) -> pa.Array:
    """One column converted record by record, each failure counted with a row sample."""
    out: list[Any] = []
    append = out.append
    for index, record in enumerate(records):
        value = _value(record, column.path)
        if value is _MISSING or value is None:
            append(None)
            if not column.nullable:
                _error(report, ids[index], value, "null or missing in a non-nullable column")
            continue
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
    fast = read_schema(columns)
    report = {c.name: ColumnReport() for c in columns}
    target = Storage.parse(target_uri)
    filesystem, final = target.fs, target.root
    filesystem.create_dir(final.rsplit("/", 1)[0], recursive=True)
    tmp = f"{final.rsplit('/', 1)[0]}/.{uuid.uuid4().hex}.tmp"
    rows = 0
    try:
        with filesystem.open_output_stream(tmp) as handle, pq.ParquetWriter(
                handle, schema, compression="snappy") as writer:
            for batch in _envelope_batches(source_uri):
                try:
                    typed = _arrow_columns(batch, columns, fast)
                except _NeedsRecords:
                    records = _records(batch)
                    ids = batch.column("event_id").to_pylist()
                    typed = [_record_column(c, records, ids, report[c.name]) for c in columns]
                for column, array in zip(columns, typed, strict=True):
                    report[column.name].nulls += array.null_count
                arrays = [batch.column(name) for name in JOIN_COLUMNS] + typed
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
        filesystem.move(tmp, final)
    finally:
        if filesystem.get_file_info(tmp).type != pafs.FileType.NotFound:
            filesystem.delete_file(tmp)
    return TypedWindow(target_uri, rows, tuple(columns), report)


def typed_dataset(root: str) -> ds.Dataset:
    """Every typed partition under `root` as one dataset, schemas unified by name.

    A column inferred as int64 in one window and float64 in another reads as float64; any
    other disagreement reads as text, following the inference rule.
    """
    import pyarrow.dataset as ds  # a reader's helper; a run never needs it (see the top)

    location = Storage.parse(root)
    filesystem, path = location.fs, location.root
    files = sorted(info.path for info in filesystem.get_file_info(
        pafs.FileSelector(path, recursive=True)) if info.path.endswith(".parquet"))
    merged: dict[str, pa.Field] = {}
    for name in files:
        with filesystem.open_input_file(name) as handle:
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
