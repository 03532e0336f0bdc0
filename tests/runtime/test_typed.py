"""Typing envelope files: both paths (Arrow batches, records) follow the pure rules, errors
carry row samples, and the Hive layout reads back as one dataset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from chartly_dagster.core.catalog import ProfileCatalog, ResolvedProfile
from chartly_dagster.core.columns import convert_value, infer_columns
from chartly_dagster.core.profile import ColumnSpec
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime import typed as typed_module
from chartly_dagster.runtime.envelope import ENVELOPE_ARROW_SCHEMA, EnvelopeBuilder
from chartly_dagster.runtime.typed import (
    declared_columns,
    partition_path,
    type_window,
    typed_dataset,
)
from tests.support.paths import REPO

DAY = Window.parse("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")


@pytest.fixture(scope="module")
def feed() -> ResolvedProfile:
    """sales-feed: records keyed by `id`, timed by `occurred_at` (RFC3339)."""
    catalog = ProfileCatalog.load(REPO / "profiles")
    return next(r for r in catalog.resolve_all()
                if r.connector == "sales-feed" and r.ref.variant is None)


def _record(i: int, window: Window = DAY, **fields: Any) -> dict[str, Any]:
    at = window.start + timedelta(seconds=i)
    return {"id": f"itm_{i:06d}", "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), **fields}


def envelope_file(path: Path, resolved: ResolvedProfile, records: list[dict[str, Any]],
                  window: Window = DAY) -> str:
    batch, _, dropped = EnvelopeBuilder(resolved, window).build(
        records, sequence_start=0, provenance_uri="http://127.0.0.1/feed",
        collected_at=datetime(2026, 2, 2, tzinfo=UTC))
    assert dropped == 0
    pq.write_table(pa.Table.from_batches([batch], ENVELOPE_ARROW_SCHEMA), path)
    return str(path)


def _expected_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the pure rule says the typed columns hold, record by record."""
    columns = infer_columns(records)
    rows = []
    for record in records:
        row = {}
        for column in columns:
            value: Any = record
            for part in column.path:
                value = value.get(part) if isinstance(value, dict) else None
            row[column.name] = None if value is None else convert_value(
                value, typed_module.ColumnType(column.kind))
        rows.append(row)
    return rows


SHAPES = {
    # Arrow's JSON reader takes these batches as they are
    "uniform": lambda i: _record(i, amount=i + 0.5, n=i, ok=i % 2 == 0,
                                 customer={"id": f"c{i % 3}", "name": "Zoë"},
                                 note=None if i % 4 else "x"),
    # int/float widening and optional nested fields
    "widening": lambda i: _record(i, amount=i if i % 2 else i + 0.25,
                                  customer={"id": "c"} if i % 3 else None),
    # mixed incompatible types and arrays: only the per-record path can type these
    "mixed": lambda i: _record(i, v=i if i % 2 else f"s{i}", tags=[i, "x"],
                               c={"k": 1} if i % 5 else "flat"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_inferred_typing_follows_the_pure_rule(tmp_path: Path, feed: ResolvedProfile,
                                               shape: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    monkeypatch.setattr(typed_module, "BATCH_ROWS", 7)  # several batches per file
    records = [SHAPES[shape](i) for i in range(40)]
    source = envelope_file(tmp_path / "env.parquet", feed, records)
    result = type_window(source, str(tmp_path / "typed" / "part-0.parquet"))
    table = pq.read_table(result.uri)
    names = [c.name for c in infer_columns(records)]
    assert table.column_names == [*typed_module.JOIN_COLUMNS, *names]
    assert table.select(names).to_pylist() == _expected_rows(records)
    assert result.rows == 40 and result.errors == 0
    assert table.column("record_id").to_pylist() == [r["id"] for r in records]


def test_declared_columns_convert_in_both_paths(tmp_path: Path, feed: ResolvedProfile,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typed_module, "BATCH_ROWS", 5)
    # Records 0-9 are clean (Arrow path); 10-14 carry one bad value each (record path).
    records = [_record(i, amount=f"{i}.5" if i >= 10 else i + 0.5, at=1769904000 + i,
                       customer={"id": f"c{i}"}) for i in range(15)]
    records[12]["amount"] = "n/a"
    del records[13]["customer"]
    specs = [ColumnSpec.model_validate(c) for c in [
        {"name": "amount", "type": "decimal(8,2)", "nullable": False},
        {"name": "at", "type": "timestamp", "format": "epoch_s"},
        {"name": "customer_id", "source": "customer.id", "type": "string", "nullable": False},
        {"name": "when", "source": "occurred_at", "type": "timestamp", "description": "d"}]]
    source = envelope_file(tmp_path / "env.parquet", feed, records)
    result = type_window(source, str(tmp_path / "typed.parquet"), declared_columns(specs))
    table = pq.read_table(result.uri)
    assert str(table.schema.field("amount").type) == "decimal128(8, 2)"
    assert table.schema.field("when").metadata == {b"description": b"d"}
    rows = table.select(["amount", "at", "customer_id", "when"]).to_pylist()
    assert [str(r["amount"]) for r in rows[:3]] == ["0.50", "1.50", "2.50"]
    assert rows[11]["amount"] is not None and rows[12]["amount"] is None
    assert rows[4]["at"] == datetime(2026, 2, 1, 0, 0, 4, tzinfo=UTC)
    assert rows[4]["when"] == datetime(2026, 2, 1, 0, 0, 4, tzinfo=UTC)
    assert rows[13]["customer_id"] is None
    report = {name: r.to_dict() for name, r in result.report.items()}
    assert report["amount"]["errors"] == 1
    assert report["amount"]["samples"] == [{
        "event_id": table.column("event_id")[12].as_py(), "value": '"n/a"',
        "error": "expected decimal(8,2)"}]
    assert report["customer_id"]["errors"] == 1
    assert report["customer_id"]["samples"][0]["error"] == (
        "null or missing in a non-nullable column")
    assert report["at"] == {"nulls": 0, "errors": 0, "samples": []}
    assert result.errors == 2


def test_conversion_errors_keep_a_bounded_sample(tmp_path: Path, feed: ResolvedProfile) -> None:
    records = [_record(i, amount="x") for i in range(12)]
    spec = ColumnSpec.model_validate({"name": "amount", "type": "float64"})
    source = envelope_file(tmp_path / "env.parquet", feed, records)
    result = type_window(source, str(tmp_path / "t.parquet"), declared_columns([spec]))
    report = result.report["amount"]
    assert report.errors == 12 and report.nulls == 12
    assert len(report.samples) == typed_module.ERROR_SAMPLES
    assert report.samples[0]["error"] == "expected float64, got string"


def test_a_failed_write_leaves_no_file(tmp_path: Path, feed: ResolvedProfile) -> None:
    source = envelope_file(tmp_path / "env.parquet", feed, [_record(0, a=1)])
    target = tmp_path / "typed" / "part-0.parquet"
    broken = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"raw": ["{}"]}), broken)  # no envelope columns
    spec = ColumnSpec.model_validate({"name": "a", "type": "int64"})
    for declared in (None, declared_columns([spec])):
        with pytest.raises(ValueError, match="not an envelope file: no event_id"):
            type_window(str(broken), str(target), declared)
        assert not target.parent.exists() or list(target.parent.iterdir()) == []
    type_window(source, str(target))
    assert pq.read_table(target).num_rows == 1


def test_hive_layout_reads_a_range_as_one_dataset(tmp_path: Path, feed: ResolvedProfile
                                                  ) -> None:
    root = tmp_path / "typed" / "feed"
    for day in range(4):
        window = Window(DAY.start + timedelta(days=day), DAY.end + timedelta(days=day))
        records = [_record(i, window, amount=i if day < 2 else i + 0.5) for i in range(3)]
        source = envelope_file(tmp_path / f"env{day}.parquet", feed, records, window)
        folder = root / partition_path(window.to_dict()["start"])
        type_window(source, str(folder / "part-0.parquet"))
    # the README's three lines, on the two days whose schemas agree
    dataset = ds.dataset(root, partitioning="hive")
    days = dataset.to_table(filter=(ds.field("window") >= "2026-02-01")
                            & (ds.field("window") < "2026-02-03"))
    assert days.num_rows == 6
    assert sorted(set(days.column("window").to_pylist())) == [
        "2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"]
    # all four days: int64 in the first two windows, float64 later, unified as float64
    everything = typed_dataset(str(root)).to_table()
    assert everything.num_rows == 12
    assert everything.schema.field("amount").type == pa.float64()
    assert sorted(everything.column("amount").to_pylist()) == [
        0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0, 2.5, 2.5]
