"""The envelope contract checked column-wise over a table or a file read batch by batch;
each finding names the rule, a count and sample rows."""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.canonical import format_rfc3339
from ...core.windows import Window
from ..arrays import bool_array, bools, int64_scalar, int64_values, string_scalar
from .ids import IdSet, event_id_keys
from .schema import (
    ENVELOPE_ARROW_SCHEMA,
    ENVELOPE_VERSION,
    TIMESTAMP,
    micros,
    string_offsets,
)


def validate_envelopes(table: pa.Table, window: Window | None = None, sample: int = 5, *,
                       verify_raw_sha: bool = True,
                       check_duplicates: bool = True) -> list[dict[str, Any]]:
    """Vectorized envelope checks; each finding names the rule and up to `sample` rows.

    `verify_raw_sha=False` skips re-hashing `raw`, for batches whose hashes were computed
    a moment ago from the same bytes; `check_duplicates=False` leaves duplicate event ids
    to a caller that tracks them across batches.
    """
    findings: list[dict[str, Any]] = []
    expected = {f.name: f.type for f in ENVELOPE_ARROW_SCHEMA}
    actual = {f.name: f.type for f in table.schema}
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        wrong = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
        return [{"code": "schema_mismatch", "message": f"missing={missing} extra={extra} "
                 f"wrong_type={wrong}", "rows": []}]
    n = table.num_rows
    if n == 0:
        return findings

    def report(code: str, message: str, bad: pa.Array) -> None:
        rows = np.flatnonzero(bools(bad))
        if len(rows):
            picks = rows[:sample].tolist()
            findings.append({"code": code, "message": message, "count": len(rows),
                             "rows": picks,
                             "event_ids": [table.column("event_id")[i].as_py() for i in picks]})

    col = table.column
    for name in ENVELOPE_ARROW_SCHEMA.names:
        if col(name).null_count:
            report("null_field", f"{name} is null", pc.is_null(col(name)).combine_chunks())
    report("envelope_version", f"envelope_version is not {ENVELOPE_VERSION}",
           pc.not_equal(col("envelope_version"), string_scalar(ENVELOPE_VERSION)).combine_chunks())
    report("event_id_format", "event_id is not evt_ + 32 hex",
           pc.invert(pc.match_substring_regex(col("event_id"), r"^evt_[0-9a-f]{32}$"))
           .combine_chunks())
    report("raw_sha256_format", "raw_sha256 is not 64 hex",
           pc.invert(pc.match_substring_regex(col("raw_sha256"), r"^[0-9a-f]{64}$"))
           .combine_chunks())
    report("provenance_uri", "provenance_uri is not an http(s) URL without credentials",
           _not_matching(col("provenance_uri"), r"^https?://[^@\s]+$"))
    report("empty_record_id", "record_id is empty",
           pc.equal(pc.utf8_length(col("record_id")), int64_scalar(0)).combine_chunks())
    if check_duplicates:
        report("duplicate_event_id", "event_id appears more than once",
               _duplicates(col("event_id")))
    seq = int64_values(col("sequence").combine_chunks())
    bad_seq = np.zeros(n, dtype=bool)
    if n > 1:
        bad_seq[1:] = seq[1:] <= seq[:-1]
    report("sequence_not_monotonic", "sequence does not increase", bool_array(bad_seq))
    if window is not None:
        occ = col("occurred_at")
        start = int64_scalar(micros(window.start), TIMESTAMP)
        end = int64_scalar(micros(window.end), TIMESTAMP)
        report("outside_window", f"occurred_at outside [{format_rfc3339(window.start)}, "
               f"{format_rfc3339(window.end)})",
               pc.or_(pc.less(occ, start), pc.greater_equal(occ, end)).combine_chunks())
        report("window_bounds", "window_start/window_end differ from the partition window",
               pc.or_(pc.not_equal(col("window_start"), start),
                      pc.not_equal(col("window_end"), end)).combine_chunks())
    if verify_raw_sha:
        report("raw_sha256_mismatch", "raw_sha256 does not match raw", _sha_mismatch(table))
    return findings


def validate_envelope_stream(batches: Iterable[pa.RecordBatch], window: Window | None = None,
                             sample: int = 5) -> tuple[list[dict[str, Any]], int]:
    """`validate_envelopes` over a file read batch by batch: (findings, rows checked).

    Memory is one batch plus 8 bytes per row for the duplicate-id index, so a window of
    millions of rows is checked without loading the file. Row numbers are file-wide.
    """
    merged: dict[str, dict[str, Any]] = {}
    ids = IdSet()
    offset = 0
    last_sequence: int | None = None

    def add(finding: dict[str, Any]) -> None:
        rows = [offset + r for r in finding["rows"]]
        entry = merged.setdefault(finding["code"], {**finding, "count": 0, "rows": [],
                                                    "event_ids": []})
        entry["count"] += finding.get("count", len(rows))
        room = sample - len(entry["rows"])
        entry["rows"] += rows[:room]
        entry["event_ids"] += finding.get("event_ids", [])[:room]

    for batch in batches:
        table = pa.Table.from_batches([batch])
        found = validate_envelopes(table, window, sample, check_duplicates=False)
        if found and found[0]["code"] == "schema_mismatch":
            return found, offset
        for finding in found:
            add(finding)
        n = batch.num_rows
        if n:
            seen = ids.add_new(event_id_keys(batch.column("event_id")))
            picks = np.flatnonzero(seen)[:sample].tolist()
            if seen.any():
                add({"code": "duplicate_event_id", "message": "event_id appears more than once",
                     "count": int(seen.sum()), "rows": picks,
                     "event_ids": [batch.column("event_id")[i].as_py() for i in picks]})
            sequence = batch.column("sequence")
            first = sequence[0].as_py()
            if last_sequence is not None and first is not None and first <= last_sequence:
                add({"code": "sequence_not_monotonic", "message": "sequence does not increase",
                     "count": 1, "rows": [0],
                     "event_ids": [batch.column("event_id")[0].as_py()]})
            top = pc.max(sequence).as_py()
            last_sequence = top if top is not None else last_sequence
        offset += n
    return sorted(merged.values(), key=lambda f: f["code"]), offset


def _not_matching(column: pa.ChunkedArray, pattern: str) -> pa.Array:
    """Rows whose value does not match `pattern`, matching each distinct value once: a
    window's provenance URIs are its pages' URLs, each repeated on every record of its page
    (a tenth of the cost of matching every row)."""
    values = column.combine_chunks()
    distinct = pc.unique(values)
    bad = distinct.filter(pc.invert(pc.match_substring_regex(distinct, pattern)))
    return pc.is_in(values, value_set=bad)


def _duplicates(column: pa.ChunkedArray) -> pa.Array:
    counts = pc.value_counts(column.combine_chunks())
    repeated = counts.filter(pc.greater(counts.field("counts"), int64_scalar(1))).field(
        "values")
    return pc.is_in(column.combine_chunks(), value_set=repeated)


def _stated_hex(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(n x 64 bytes of hex text, mask of rows that hold 64 bytes) of a raw_sha256 column,
    read in place when every value is 64 bytes (the usual file)."""
    n = len(column)
    offsets = string_offsets(column)
    data = column.buffers()[2]
    text = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    ok = np.diff(offsets) == 64
    if column.null_count:
        ok &= bools(column.is_valid())
    if ok.all():
        return text[offsets[0]:offsets[0] + 64 * n].reshape(n, 64), ok
    stated = np.zeros((n, 64), dtype=np.uint8)  # never lowercase hex: never matches
    stated[ok] = text[offsets[:-1][ok].astype(np.int64)[:, None] + np.arange(64)]
    return stated, ok


def _sha_mismatch(table: pa.Table) -> pa.Array:
    # Hashing is the one per-row step left; everything around it stays columnar. Each
    # value is hashed from a view of the column's data buffer (no bytes object per row),
    # the digests are hex-encoded in one call and compared with the stated text as one
    # byte matrix. A null raw, or a raw_sha256 that is not 64 bytes, never matches.
    out = np.zeros(table.num_rows, dtype=bool)
    sha = hashlib.sha256
    row = 0
    for batch in table.select(["raw", "raw_sha256"]).to_batches():
        raw = batch.column(0)
        offsets = string_offsets(raw).tolist()
        data = raw.buffers()[2]
        body = memoryview(data) if data is not None else memoryview(b"")
        computed = binascii.hexlify(
            b"".join([sha(body[start:end]).digest() for start, end in pairwise(offsets)]))
        stated, ok = _stated_hex(batch.column(1))
        bad = ~ok | (np.frombuffer(computed, dtype=np.uint8).reshape(-1, 64) != stated).any(
            axis=1)
        if raw.null_count:
            bad |= ~bools(raw.is_valid())
        out[row:row + len(bad)] = bad
        row += len(bad)
    return bool_array(out)
