"""The typed-column rules (pure): inference, declared-type conversion, drift, the model."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from chartly_dagster.core.columns import (
    ColumnType,
    ConversionError,
    convert_value,
    infer_columns,
    parse_column_type,
    schema_drift,
)
from chartly_dagster.core.profile import ColumnSpec, RecordsSpec

# record shapes -> inferred (column, path, kind), in the documented (sorted) order
INFERENCE_TABLE: list[tuple[str, list[dict[str, Any]], list[tuple[str, str, str]]]] = [
    ("scalars", [{"s": "x", "i": 1, "f": 1.5, "b": True}],
     [("b", "b", "bool"), ("f", "f", "float64"), ("i", "i", "int64"), ("s", "s", "string")]),
    ("union of fields across records", [{"a": 1}, {"b": "x"}],
     [("a", "a", "int64"), ("b", "b", "string")]),
    ("int and float widen", [{"n": 1}, {"n": 2.5}], [("n", "n", "float64")]),
    ("float then int widens too", [{"n": 2.5}, {"n": 1}], [("n", "n", "float64")]),
    ("incompatible types fall back to json", [{"v": 1}, {"v": "one"}], [("v", "v", "json")]),
    ("bool is not an int", [{"v": True}, {"v": 0}], [("v", "v", "json")]),
    ("nulls take the other kind", [{"v": None}, {"v": "x"}, {}], [("v", "v", "string")]),
    ("only nulls is string", [{"v": None}], [("v", "v", "string")]),
    ("nested objects flatten", [{"c": {"id": "x", "geo": {"lat": 1.0}}}],
     [("c__geo__lat", "c.geo.lat", "float64"), ("c__id", "c.id", "string")]),
    ("object and null", [{"c": {"id": "x"}}, {"c": None}], [("c__id", "c.id", "string")]),
    ("object and scalar fall back to json", [{"c": {"id": "x"}}, {"c": 5}],
     [("c", "c", "json")]),
    ("arrays are json", [{"tags": ["a", "b"]}], [("tags", "tags", "json")]),
    ("empty objects add no column", [{"e": {}, "a": 1}], [("a", "a", "int64")]),
    ("join names are kept as raw_", [{"occurred_at": "t", "event_id": "e"}],
     [("raw_event_id", "event_id", "string"), ("raw_occurred_at", "occurred_at", "string")]),
    ("strings are never guessed as timestamps", [{"t": "2026-02-01T00:00:00Z"}],
     [("t", "t", "string")]),
    ("ints beyond int64 are json", [{"big": 2 ** 70}], [("big", "big", "json")]),
    ("colliding names are numbered in path order", [{"a": {"b": 1}}, {"a__b": "x"}],
     [("a__b", "a.b", "int64"), ("a__b_2", "a__b", "string")]),
]


@pytest.mark.parametrize(("records", "expected"), [(r, e) for _, r, e in INFERENCE_TABLE],
                         ids=[name for name, _, _ in INFERENCE_TABLE])
def test_inference_table(records: list[dict[str, Any]],
                         expected: list[tuple[str, str, str]]) -> None:
    got = [(c.name, ".".join(c.path), c.kind) for c in infer_columns(records)]
    assert got == expected


def test_inference_does_not_depend_on_record_order() -> None:
    records = [{"z": 1, "a": {"k": "v"}}, {"m": 2.0, "z": 1.5}, {"a": None, "q": [1]}]
    assert infer_columns(records) == infer_columns(list(reversed(records)))


@pytest.mark.parametrize(("text", "expected"), [
    ("string", ColumnType("string")), ("INT64", ColumnType("int64")),
    ("decimal(12,2)", ColumnType("decimal", 12, 2)),
    ("decimal(38, 0)", ColumnType("decimal", 38, 0)),
])
def test_column_type_grammar(text: str, expected: ColumnType) -> None:
    assert parse_column_type(text) == expected


@pytest.mark.parametrize("text", ["varchar", "decimal(3,4)", "decimal(0,0)", "decimal(40,2)", ""])
def test_bad_column_types_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="column type"):
        parse_column_type(text)


@pytest.mark.parametrize(("value", "type_text", "fmt", "expected"), [
    ("x", "string", "rfc3339", "x"),
    (3, "int64", "rfc3339", 3),
    (3, "float64", "rfc3339", 3.0),
    (False, "bool", "rfc3339", False),
    ("2026-02-01T01:02:03+01:00", "timestamp", "rfc3339",
     datetime(2026, 2, 1, 0, 2, 3, tzinfo=UTC)),
    (1769904000, "timestamp", "epoch_s", datetime(2026, 2, 1, tzinfo=UTC)),
    (1769904000500, "timestamp", "epoch_ms", datetime(2026, 2, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ("2026-02-01", "date", "rfc3339", date(2026, 2, 1)),
    (909.5, "decimal(6,2)", "rfc3339", Decimal("909.50")),
    ("12.345", "decimal(6,2)", "rfc3339", Decimal("12.34")),
    ({"b": 1, "a": [1]}, "json", "rfc3339", '{"a":[1],"b":1}'),
])
def test_declared_conversion(value: Any, type_text: str, fmt: str, expected: Any) -> None:
    assert convert_value(value, parse_column_type(type_text), fmt) == expected


@pytest.mark.parametrize(("value", "type_text", "fmt", "message"), [
    (3, "string", "rfc3339", "expected string, got int64"),
    ("3", "int64", "rfc3339", "expected int64, got string"),
    (2.5, "int64", "rfc3339", "expected int64, got float64"),
    (1, "bool", "rfc3339", "expected bool, got int64"),
    ("2026-02-01T00:00:00", "timestamp", "rfc3339", "without a UTC offset"),
    ("yesterday", "timestamp", "rfc3339", "expected an RFC3339 timestamp"),
    ("1769904000", "timestamp", "epoch_s", "expected epoch_s epoch number"),
    ("02/01/2026", "date", "rfc3339", "expected a YYYY-MM-DD date"),
    (123456.0, "decimal(5,2)", "rfc3339", "does not fit decimal(5,2)"),
])
def test_declared_conversion_errors_say_why(value: Any, type_text: str, fmt: str,
                                            message: str) -> None:
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_value(value, parse_column_type(type_text), fmt)


def test_schema_drift_names_added_removed_and_retyped_fields() -> None:
    drift = schema_drift({"a": "int64", "b": "string", "c": "bool"},
                         {"a": "float64", "c": "bool", "d": "string"})
    assert drift == {"added": ["d"], "removed": ["b"],
                     "retyped": [{"column": "a", "from": "int64", "to": "float64"}]}
    assert schema_drift({"a": "int64"}, {"a": "int64"}) == {"added": [], "removed": [],
                                                            "retyped": []}


def _records(**extra: Any) -> dict[str, Any]:
    return {"path": "", "idField": "id", "timeField": "t", **extra}


def test_records_columns_validate_and_normalize() -> None:
    spec = RecordsSpec.model_validate(_records(columns=[
        {"name": "amount", "type": "DECIMAL(10, 2)", "nullable": False},
        {"name": "at", "source": "meta.at", "type": "timestamp", "format": "epoch_ms"}]))
    assert spec.columns is not None
    assert [c.type for c in spec.columns] == ["decimal(10,2)", "timestamp"]
    assert "columns" in spec.model_dump(by_alias=True)


def test_profiles_without_columns_serialize_as_before() -> None:
    # The resolved hash of a profile that declares nothing must not change.
    assert "columns" not in RecordsSpec.model_validate(_records()).model_dump(by_alias=True)


@pytest.mark.parametrize(("column", "message"), [
    ({"name": "x", "type": "varchar"}, "column type 'varchar'"),
    ({"name": "event_id", "type": "string"}, "reserved"),
    ({"name": "x", "type": "string", "format": "epoch_s"}, "format applies to timestamp"),
    ({"name": "x", "type": "timestamp", "format": "%Y"}, "format applies to timestamp"),
    ({"name": "x y", "type": "string"}, "name"),
    ({"name": "x", "source": "a..b", "type": "string"}, "field path"),
    ({"name": "x", "type": "string", "typo": 1}, "typo"),
])
def test_bad_column_declarations_name_the_problem(column: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RecordsSpec.model_validate(_records(columns=[column]))


def test_duplicate_and_empty_column_lists_are_refused() -> None:
    with pytest.raises(ValidationError, match="unique"):
        RecordsSpec.model_validate(_records(columns=[{"name": "a", "type": "string"}] * 2))
    with pytest.raises(ValidationError, match="at least one column"):
        RecordsSpec.model_validate(_records(columns=[]))


def test_column_spec_source_defaults_to_the_name() -> None:
    assert ColumnSpec.model_validate({"name": "a", "type": "json"}).source is None
