"""Envelope files: the vectorized validator passes written files and names the rows it
catches in corrupted ones; every row validates against the shipped JSON Schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest

from chartly_dagster.core.canonical import format_rfc3339
from chartly_dagster.runtime.envelope import (
    ENVELOPE_ARROW_SCHEMA,
    content_hash,
    envelope_json_schema,
    validate_envelope_stream,
    validate_envelopes,
)
from chartly_dagster.runtime.storage import read_window_file
from tests.support.live import DAY, PROFILES, Live

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")


@pytest.fixture(scope="module")
def day_tables(live_module: Live, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, tuple[Any, pa.Table]]]:
    live_module.reset(tmp_path_factory.mktemp("envelopes"))
    out = {}
    for name in sorted(PROFILES):
        result = live_module.fetch(name, DAY)
        out[name] = (result, read_window_file(result.uri))
    yield out


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_written_file_validates_and_hashes(day_tables: dict, name: str) -> None:
    result, table = day_tables[name]
    assert table.schema.equals(ENVELOPE_ARROW_SCHEMA)
    assert validate_envelopes(table, DAY) == []
    assert content_hash(table) == result.content_hash
    ids = table.column("event_id").to_pylist()
    assert len(set(ids)) == len(ids)


def _rfc3339(value: Any) -> Any:
    return format_rfc3339(value) if isinstance(value, datetime) else value


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_rows_validate_against_the_shipped_json_schema(day_tables: dict, name: str) -> None:
    _, table = day_tables[name]
    schema = envelope_json_schema()
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert set(schema["required"]) == set(ENVELOPE_ARROW_SCHEMA.names)
    rows = table.slice(0, 200).to_pylist() + table.slice(table.num_rows - 50).to_pylist()
    for row in rows:
        document = {k: _rfc3339(v) for k, v in row.items()}
        errors = sorted(validator.iter_errors(document), key=str)
        assert errors == [], f"{name} row {row['sequence']}: {errors[0].message}"
    # and the schema is not vacuous: a broken row fails it
    bad = {k: _rfc3339(v) for k, v in rows[0].items()} | {"event_id": "evt_XYZ"}
    assert list(validator.iter_errors(bad))


def _replace(table: pa.Table, column: str, values: list[Any]) -> pa.Table:
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    return table.set_column(index, field, pa.array(values, field.type))


def _codes(findings: list[dict[str, Any]]) -> dict[str, list[int]]:
    return {f["code"]: f["rows"] for f in findings}


@pytest.fixture
def table(day_tables: dict) -> pa.Table:
    return day_tables["sales-events"][1]


def test_validator_catches_tampered_raw(table: pa.Table) -> None:
    raws = table.column("raw").to_pylist()
    raws[3] = raws[3].replace('"currency":"', '"currency":"X')
    findings = validate_envelopes(_replace(table, "raw", raws), DAY)
    assert _codes(findings) == {"raw_sha256_mismatch": [3]}
    assert findings[0]["event_ids"] == [table.column("event_id")[3].as_py()]


def test_validator_hashes_sliced_and_null_raw_values(table: pa.Table) -> None:
    raws = table.column("raw").to_pylist()
    raws[2] = None
    tampered = _replace(table, "raw", raws).slice(1)  # a view: offsets start past row 0
    findings = validate_envelopes(tampered, DAY)
    assert _codes(findings) == {"null_field": [1], "raw_sha256_mismatch": [1]}
    assert validate_envelopes(table.slice(1), DAY) == []


def test_validator_compares_stated_digests_exactly(table: pa.Table) -> None:
    sha = table.column("raw_sha256").to_pylist()
    sha[1] = sha[1].upper()  # the right digest, not in the contract's lowercase hex
    sha[4] = None
    sha[5] = sha[5][:63]
    sha[7] = sha[6]  # well-formed, someone else's
    findings = validate_envelopes(_replace(table, "raw_sha256", sha).slice(1), DAY)
    assert _codes(findings)["raw_sha256_mismatch"] == [0, 3, 4, 6]
    untouched = _replace(table, "raw_sha256", table.column("raw_sha256").to_pylist())
    assert validate_envelopes(untouched.slice(2), DAY) == []


def test_validator_catches_duplicate_event_id(table: pa.Table) -> None:
    ids = table.column("event_id").to_pylist()
    ids[7] = ids[2]
    assert _codes(validate_envelopes(_replace(table, "event_id", ids), DAY)) == {
        "duplicate_event_id": [2, 7]}


def test_validator_catches_rows_outside_the_window(table: pa.Table) -> None:
    occurred = table.column("occurred_at").to_pylist()
    occurred[5] = DAY.end
    occurred[9] = DAY.start - timedelta(microseconds=1)
    assert _codes(validate_envelopes(_replace(table, "occurred_at", occurred), DAY)) == {
        "outside_window": [5, 9]}


def test_validator_catches_sequence_format_and_bounds(table: pa.Table) -> None:
    seq = table.column("sequence").to_pylist()
    seq[4] = seq[3]
    sha = table.column("raw_sha256").to_pylist()
    sha[6] = "nothex"
    prov = table.column("provenance_uri").to_pylist()
    prov[8] = "http://user:pw@localhost/v1/events"
    broken = _replace(_replace(_replace(table, "sequence", seq), "raw_sha256", sha),
                      "provenance_uri", prov)
    codes = _codes(validate_envelopes(broken, DAY))
    assert codes == {"sequence_not_monotonic": [4], "raw_sha256_format": [6],
                     "raw_sha256_mismatch": [6], "provenance_uri": [8]}
    other = DAY.__class__(DAY.start + timedelta(days=1), DAY.end + timedelta(days=1))
    codes = _codes(validate_envelopes(table, other))
    assert set(codes) == {"outside_window", "window_bounds"}
    assert codes["window_bounds"] == [0, 1, 2, 3, 4]  # a sample of five rows


def test_validator_reports_schema_mismatch(table: pa.Table) -> None:
    findings = validate_envelopes(table.drop_columns(["raw"]), DAY)
    assert [f["code"] for f in findings] == ["schema_mismatch"]
    assert "raw" in findings[0]["message"]


def test_content_hash_ignores_wall_clock_and_sees_content(table: pa.Table) -> None:
    later = [t + timedelta(hours=5) for t in table.column("collected_at").to_pylist()]
    moved = _replace(_replace(table, "collected_at", later), "ingested_at", later)
    assert content_hash(moved) == content_hash(table)
    assert content_hash(table.slice(1)) != content_hash(table)
    raws = table.column("raw").to_pylist()
    shas = table.column("raw_sha256").to_pylist()
    raws[0] = raws[0].replace("EUR", "USD") if "EUR" in raws[0] else raws[0] + " "
    shas[0] = hashlib.sha256(raws[0].encode()).hexdigest()
    assert content_hash(_replace(_replace(table, "raw", raws), "raw_sha256", shas)) != \
        content_hash(table)
    # batch boundaries do not matter
    assert content_hash(pa.Table.from_batches(table.to_batches(max_chunksize=7))) == \
        content_hash(table)


def test_read_back_hash_after_parquet_round_trip(day_tables: dict, tmp_path: Path) -> None:
    result, table = day_tables["invoices"]
    assert result.dropped_out_of_window == 0 and result.records == table.num_rows
    assert content_hash(read_window_file(result.uri)) == result.content_hash


def _batches(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=size)


def test_stream_validator_passes_a_good_file_in_any_batching(table: pa.Table) -> None:
    for size in (1, 100, 1000, table.num_rows):
        assert validate_envelope_stream(_batches(table, size), DAY) == ([], table.num_rows)


def test_stream_validator_sees_across_batches_with_file_wide_rows(table: pa.Table) -> None:
    """Duplicates and sequence breaks that straddle two batches are found; rows are global."""
    ids = table.column("event_id").to_pylist()
    ids[1200] = ids[3]  # a duplicate in a later batch
    raws = table.column("raw").to_pylist()
    raws[1001] = raws[1001].replace('"currency":"', '"currency":"X')
    sequence = table.column("sequence").to_pylist()
    sequence[1000] = sequence[999]  # the break sits exactly on a batch boundary
    bad = _replace(_replace(_replace(table, "event_id", ids), "raw", raws), "sequence", sequence)
    findings, rows = validate_envelope_stream(_batches(bad, 1000), DAY)
    assert rows == table.num_rows
    assert _codes(findings) == {"duplicate_event_id": [1200], "raw_sha256_mismatch": [1001],
                                "sequence_not_monotonic": [1000]}
    assert findings[0]["event_ids"] == [ids[3]]
