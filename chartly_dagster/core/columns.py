"""Typed columns: the declared-type grammar, value conversion and the inference rule.

Pure functions over parsed JSON values, so the runtime's file typing, the drift check and
the tests share one definition of what a column's type is and when two types agree.

Inference rule (documented in the README):
- every field of every record becomes a column (the union over records); nested objects
  flatten into `parent__child` columns (an object that is only ever empty adds none);
  arrays are `json`;
- a field's kind is the merge of its non-null values: equal kinds stay, `int64` and
  `float64` widen to `float64`, anything else (or an object in one record and a scalar in
  another) falls back to `json` text;
- strings stay strings: inference never guesses timestamps or dates (declare them);
- columns are sorted by name, so the same records give the same schema in any order (two
  paths that flatten to one name: the later path, in sorted order, gets `_2`);
- a field whose column name is a join column (`event_id`, `occurred_at`, ...) is kept as
  `raw_<name>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

SCALAR_TYPES = ("string", "int64", "float64", "bool", "timestamp", "date", "json")
TIMESTAMP_FORMATS = ("rfc3339", "epoch_s", "epoch_ms")
#: envelope columns every typed row keeps, to join back to the envelope file
JOIN_COLUMNS = ("event_id", "record_id", "record_type", "occurred_at", "window_start",
                "window_end")
_DECIMAL_RE = re.compile(r"^decimal\((\d{1,2}),\s*(\d{1,2})\)$")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


@dataclass(frozen=True)
class ColumnType:
    """A declared column type: a scalar name, or decimal with precision and scale."""

    name: str
    precision: int = 0
    scale: int = 0

    def __str__(self) -> str:
        return f"decimal({self.precision},{self.scale})" if self.name == "decimal" else self.name


def parse_column_type(text: str) -> ColumnType:
    """`string`, `int64`, ..., or `decimal(p,s)` with 1 <= p <= 38 and 0 <= s <= p."""
    value = text.strip().lower()
    if value in SCALAR_TYPES:
        return ColumnType(value)
    match = _DECIMAL_RE.match(value)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if 1 <= precision <= 38 and 0 <= scale <= precision:
            return ColumnType("decimal", precision, scale)
    raise ValueError(f"column type {text!r} must be one of {', '.join(SCALAR_TYPES)} or "
                     f"decimal(p,s) with 1 <= p <= 38 and 0 <= s <= p")


def column_name(path: tuple[str, ...]) -> str:
    """The column a record field lands in: `a.b` becomes `a__b`; join names get `raw_`."""
    name = "__".join(path)
    return f"raw_{name}" if name in JOIN_COLUMNS else name


def kind_of(value: Any) -> str:
    """The observed kind of one scalar JSON value (objects are flattened by the caller)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if _INT64[0] <= value <= _INT64[1] else "json"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "json"


def merge_kinds(a: str, b: str) -> str:
    """Two kinds of one field: equal stays, int64+float64 widens, anything else is json."""
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    if {a, b} == {"int64", "float64"}:
        return "float64"
    return "json"


class SchemaInference:
    """Accumulates the field kinds of records; `columns()` is the inferred schema."""

    def __init__(self) -> None:
        self._kinds: dict[tuple[str, ...], str] = {}
        self._objects: set[tuple[str, ...]] = set()

    def observe(self, record: Mapping[str, Any]) -> None:
        self._walk(record, ())

    def _walk(self, obj: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        kinds = self._kinds
        for key, value in obj.items():
            path = (*prefix, key)
            if isinstance(value, dict):
                self._objects.add(path)
                self._walk(value, path)
            else:
                kind = kind_of(value)
                previous = kinds.get(path)
                kinds[path] = kind if previous is None else merge_kinds(previous, kind)

    def observe_field(self, path: tuple[str, ...], kind: str) -> None:
        """One field's kind as observed elsewhere (a batch typed by Arrow's JSON reader)."""
        previous = self._kinds.get(path)
        self._kinds[path] = kind if previous is None else merge_kinds(previous, kind)

    def observe_object(self, path: tuple[str, ...]) -> None:
        """A path seen holding an object somewhere."""
        self._objects.add(path)

    def columns(self) -> list[InferredColumn]:
        """Sorted by column name; a path seen as an object and as a scalar is json."""
        clashing = {path for path in self._objects if self._kinds.get(path, "null") != "null"}
        out: dict[str, InferredColumn] = {}
        for path, kind in sorted(self._kinds.items()):
            if any(path[:n] in clashing for n in range(1, len(path))):
                continue  # folded into an ancestor that fell back to json
            if path in self._objects and path not in clashing:
                continue  # only ever null or an object: its children are the columns
            name = column_name(path)
            taken = 1
            while name in out:  # `a__b` and `a.b`: the later path (sorted) gets a number
                taken += 1
                name = f"{column_name(path)}_{taken}"
            out[name] = InferredColumn(name, path, "json" if path in clashing else
                                       "string" if kind == "null" else kind)
        return [out[name] for name in sorted(out)]


@dataclass(frozen=True)
class InferredColumn:
    """One inferred column: its name, the record path it reads and its kind."""

    name: str
    path: tuple[str, ...]
    kind: str


def infer_columns(records: Iterable[Mapping[str, Any]]) -> list[InferredColumn]:
    """The inferred schema of some records (see the module docstring for the rule)."""
    inference = SchemaInference()
    for record in records:
        inference.observe(record)
    return inference.columns()


class ConversionError(ValueError):
    """A value that does not convert to its column's declared type."""


def _timestamp(value: Any, fmt: str) -> datetime:
    if fmt == "rfc3339":
        if not isinstance(value, str):
            raise ConversionError("expected an RFC3339 timestamp")
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError as exc:
            raise ConversionError("expected an RFC3339 timestamp") from exc
        if moment.tzinfo is None:
            raise ConversionError("RFC3339 timestamp without a UTC offset")
        return moment.astimezone(UTC)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConversionError(f"expected {fmt} epoch number")
    seconds = value / 1000 if fmt == "epoch_ms" else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ConversionError(f"{fmt} value out of range") from exc


def convert_value(value: Any, declared: ColumnType, fmt: str = "rfc3339") -> Any:
    """One JSON value as the Python value of its declared type; raises ConversionError."""
    name = declared.name
    if name == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if name == "string":
        if isinstance(value, str):
            return value
    elif name == "int64":
        if kind_of(value) == "int64":
            return value
    elif name == "float64":
        if kind_of(value) in ("int64", "float64"):
            return float(value)
    elif name == "bool":
        if isinstance(value, bool):
            return value
    elif name == "timestamp":
        return _timestamp(value, fmt)
    elif name == "date":
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError as exc:
                raise ConversionError("expected a YYYY-MM-DD date") from exc
    elif name == "decimal" and kind_of(value) in ("int64", "float64", "string"):
        return _decimal(value, declared)
    raise ConversionError(f"expected {declared}, got {kind_of(value)}")


def _decimal(value: Any, declared: ColumnType) -> Decimal:
    try:
        number = Decimal(str(value)).quantize(Decimal(1).scaleb(-declared.scale))
    except InvalidOperation as exc:
        raise ConversionError(f"expected {declared}") from exc
    if len(number.as_tuple().digits) > declared.precision:
        raise ConversionError(f"{value!r} does not fit {declared}")
    return number


def schema_drift(previous: Mapping[str, str], current: Mapping[str, str]) -> dict[str, Any]:
    """Fields added, removed and retyped between two observed schemas (name -> kind)."""
    return {
        "added": sorted(set(current) - set(previous)),
        "removed": sorted(set(previous) - set(current)),
        "retyped": [{"column": name, "from": previous[name], "to": current[name]}
                    for name in sorted(set(previous) & set(current))
                    if previous[name] != current[name]],
    }
