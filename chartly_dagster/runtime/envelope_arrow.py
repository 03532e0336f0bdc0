"""Records → envelope Arrow batches, and the vectorized checks and hashes over them.

This is the hot path: one tight Python loop per page does only what cannot be vectorized
(canonical JSON and SHA-256 per record); everything else is pyarrow compute over columns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import resources
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..core.canonical import format_rfc3339
from ..core.catalog import ResolvedProfile
from ..core.errors import InvalidArgument
from ..core.refs import format_ref
from ..core.windows import Window

ENVELOPE_VERSION = "1.0"
_TS = pa.timestamp("us", tz="UTC")
ENVELOPE_ARROW_SCHEMA = pa.schema([
    pa.field("envelope_version", pa.string(), nullable=False),
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("record_type", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_instance", pa.string(), nullable=False),
    pa.field("source_ref", pa.string(), nullable=False),
    pa.field("tenant_id", pa.string(), nullable=False),
    pa.field("project_id", pa.string(), nullable=False),
    pa.field("connector_id", pa.string(), nullable=False),
    pa.field("occurred_at", _TS, nullable=False),
    pa.field("collected_at", _TS, nullable=False),
    pa.field("ingested_at", _TS, nullable=False),
    pa.field("window_start", _TS, nullable=False),
    pa.field("window_end", _TS, nullable=False),
    pa.field("sequence", pa.int64(), nullable=False),
    pa.field("provenance_uri", pa.string(), nullable=False),
    pa.field("raw_sha256", pa.string(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),
])
#: wall-clock columns: excluded from the content hash
WALL_CLOCK_FIELDS = ("collected_at", "ingested_at")
#: columns the content hash covers, in this order
HASHED_FIELDS = ("event_id", "record_id", "occurred_at", "sequence", "raw_sha256")


def envelope_json_schema() -> dict[str, Any]:
    """The shipped JSON Schema of one envelope row."""
    text = resources.files("chartly_dagster").joinpath("schemas/envelope.schema.json")
    return json.loads(text.read_text(encoding="utf-8"))


def _getter(path: str) -> Callable[[dict[str, Any]], Any]:
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]
        return lambda rec: rec[key]

    def get(rec: dict[str, Any]) -> Any:
        value: Any = rec
        for part in parts:
            value = value[part]
        return value

    return get


def source_key(resolved: ResolvedProfile) -> str:
    """What an event id is stable across: tenant/project/connector, not version or variant."""
    ref = resolved.ref
    return f"{ref.tenant}/{ref.project}::connector/{ref.name}"


class EnvelopeBuilder:
    """Turns one page of records into one envelope batch plus the ids needed for dedupe."""

    def __init__(self, resolved: ResolvedProfile, window: Window) -> None:
        spec = resolved.spec
        self._id_field = spec.records.id_field
        self._time_field = spec.records.time_field
        self._time_format = spec.records.time_format
        self._get_id = _getter(spec.records.id_field)
        self._get_time = _getter(spec.records.time_field)
        self._prefix = hashlib.sha256((source_key(resolved) + "\x00").encode())
        self._window = window
        self._start_us = _micros(window.start)
        self._end_us = _micros(window.end)
        self._constants = {
            "envelope_version": ENVELOPE_VERSION,
            "record_type": spec.records.record_type,
            "source": resolved.connector,
            "source_instance": spec.transport.host,
            "source_ref": format_ref(resolved.ref),
            "tenant_id": resolved.ref.tenant,
            "project_id": resolved.ref.project,
            "connector_id": resolved.connector,
        }

    def build(self, records: list[Any], *, sequence_start: int, provenance_uri: str,
              collected_at: datetime) -> tuple[pa.RecordBatch, np.ndarray, int]:
        """(batch of in-window envelopes, 64-bit id keys of that batch, records dropped)."""
        ids, times = self._extract(records)
        occurred = self._times(times, ids)
        occ_us = occurred.cast(pa.int64())
        mask = pc.and_(pc.greater_equal(occ_us, self._start_us), pc.less(occ_us, self._end_us))
        kept = pc.sum(mask).as_py() or 0
        dropped = len(records) - kept
        if dropped:
            keep = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
            records = [r for r, k in zip(records, keep, strict=True) if k]
            ids = [i for i, k in zip(ids, keep, strict=True) if k]
            occurred = occurred.filter(mask)
        raws: list[bytes] = []
        shas: list[bytes] = []
        eids: list[bytes] = []
        prefix_copy = self._prefix.copy
        sha = hashlib.sha256
        dumps = orjson.dumps
        sort = orjson.OPT_SORT_KEYS
        # The only per-record Python: canonical JSON and two SHA-256 digests. Hex text,
        # id keys and Arrow buffers are then built column-wise from the joined digests.
        for rec, rid in zip(records, ids, strict=True):
            raw = dumps(rec, option=sort)
            raws.append(raw)
            shas.append(sha(raw).digest())
            h = prefix_copy()
            h.update(rid.encode())
            eids.append(h.digest()[:16])
        n = len(raws)
        eid_bytes = b"".join(eids)
        keys = np.frombuffer(eid_bytes, dtype=">u8")[::2].astype(np.uint64)
        batch = self._batch(n, _hex_column(eid_bytes, 16, b"evt_"), ids, occurred, raws,
                            _hex_column(b"".join(shas), 32, b""), sequence_start,
                            provenance_uri, collected_at)
        return batch, keys, dropped

    def _extract(self, records: list[Any]) -> tuple[list[str], list[Any]]:
        get_id, get_time = self._get_id, self._get_time
        try:
            ids = [get_id(r) for r in records]
            times = [get_time(r) for r in records]
        except (KeyError, TypeError, IndexError):
            for i, rec in enumerate(records):
                for getter, name in ((get_id, self._id_field), (get_time, self._time_field)):
                    try:
                        getter(rec)
                    except (KeyError, TypeError, IndexError):
                        raise InvalidArgument(f"record {i} of the page has no field {name!r}",
                                              field=name) from None
            raise
        if any(type(i) is not str for i in ids):
            ids = [_id_text(i, n, self._id_field) for n, i in enumerate(ids)]
        return ids, times

    def _times(self, times: list[Any], ids: list[str]) -> pa.Array:
        try:
            if self._time_format == "rfc3339":
                return pa.array(times, pa.string()).cast(_TS)
            unit = 1_000_000 if self._time_format == "epoch_s" else 1_000
            ints = pa.array(times, pa.int64())
            if ints.null_count:
                raise pa.ArrowInvalid("null time")
            return pc.multiply_checked(ints, unit).cast(_TS)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            bad = next((i for i, t in enumerate(times) if not _time_ok(t, self._time_format)), 0)
            raise InvalidArgument(
                f"record {ids[bad]!r}: field {self._time_field!r} is not a valid "
                f"{self._time_format} time", field=self._time_field) from None

    def _batch(self, n: int, eids: pa.Array, ids: list[str], occurred: pa.Array,
               raws: list[bytes], shas: pa.Array, sequence_start: int, provenance_uri: str,
               collected_at: datetime) -> pa.RecordBatch:
        def const(value: Any, typ: pa.DataType) -> pa.Array:
            return pa.repeat(pa.scalar(value, typ), n) if n else pa.array([], typ)

        collected = _micros(collected_at)
        columns = {
            **{k: const(v, pa.string()) for k, v in self._constants.items()},
            "event_id": eids,
            "record_id": pa.array(ids, pa.string()),
            "occurred_at": occurred,
            "collected_at": const(collected, pa.int64()).cast(_TS),
            "ingested_at": const(collected, pa.int64()).cast(_TS),
            "window_start": const(self._start_us, pa.int64()).cast(_TS),
            "window_end": const(self._end_us, pa.int64()).cast(_TS),
            "sequence": pa.array(np.arange(sequence_start, sequence_start + n, dtype=np.int64)),
            "provenance_uri": const(provenance_uri, pa.string()),
            "raw_sha256": shas,
            "raw": _joined_column(raws),
        }
        return pa.RecordBatch.from_arrays([columns[f.name] for f in ENVELOPE_ARROW_SCHEMA],
                                          schema=ENVELOPE_ARROW_SCHEMA)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_column(digests: bytes, width: int, prefix: bytes) -> pa.Array:
    """Fixed-width digests (`width` bytes each) as `prefix` + lowercase hex strings."""
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(-1, width)
    n, start = raw.shape[0], len(prefix)
    item = start + 2 * width
    text = np.empty((n, item), dtype=np.uint8)
    if start:
        text[:, :start] = np.frombuffer(prefix, dtype=np.uint8)
    text[:, start::2] = _HEX_DIGITS[raw >> 4]
    text[:, start + 1::2] = _HEX_DIGITS[raw & 15]
    offsets = np.arange(0, (n + 1) * item, item, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _joined_column(values: list[bytes]) -> pa.Array:
    """UTF-8 byte strings (orjson output) as one Arrow string column, without per-item copies."""
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets.astype(np.int32)),
                                           pa.py_buffer(b"".join(values)))
    return pa.array(values, pa.binary()).view(pa.string())


def _id_text(value: Any, index: int, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise InvalidArgument(f"record {index} of the page: id field {field!r} must be a "
                              "non-empty string or integer", field=field)
    return str(value)


def _time_ok(value: Any, fmt: str) -> bool:
    if fmt != "rfc3339":
        return isinstance(value, int) and not isinstance(value, bool)
    try:
        pa.array([value], pa.string()).cast(_TS)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class IdSet:
    """Exact-membership set of 64-bit id keys in sorted numpy runs: ~8 bytes per id.

    A Python set of ids costs ~60-90 bytes each; a long window would grow memory by
    hundreds of MB just to notice a duplicate. Exact detection needs one key per record,
    so this is the one piece of window state that grows: 8 MB per million records.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self.size = 0

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Add `keys`; returns a mask of keys already present (earlier or within `keys`)."""
        # Sorted needles make searchsorted walk each run in order instead of jumping
        # around a large array: several times faster once the set outgrows the CPU cache.
        order = np.argsort(keys, kind="stable")
        needles = keys[order]
        seen_sorted = np.zeros(len(keys), dtype=bool)
        seen_sorted[1:] = needles[1:] == needles[:-1]
        for run in self._runs:
            pos = np.minimum(run.searchsorted(needles), len(run) - 1)
            seen_sorted |= run[pos] == needles
        seen = np.empty(len(keys), dtype=bool)
        seen[order] = seen_sorted
        fresh = needles[~seen_sorted]
        if len(fresh):
            self._runs.append(fresh)
            self.size += len(fresh)
            self._compact()
        return seen

    #: runs this large are never merged again, so a merge's transient copy stays bounded
    FROZEN_RUN = 1 << 21

    def _compact(self) -> None:
        # Merge runs while the newest is at least half the size of the one before it.
        while (len(self._runs) > 1 and len(self._runs[-1]) * 2 >= len(self._runs[-2])
               and len(self._runs[-2]) < self.FROZEN_RUN):
            newest = self._runs.pop()
            # Runs are disjoint and sorted: a stable sort of the two is a linear merge,
            # done in place so the transient copy is one run, not two.
            merged = np.concatenate([self._runs[-1], newest])
            merged.sort(kind="stable")
            self._runs[-1] = merged


class ContentHasher:
    """SHA-256 over the hashed columns, independent of how rows are split into batches.

    Each column feeds its own hasher (values and lengths as raw buffers, no per-row Python),
    so a window hashed page by page equals the same file hashed after reading it back.
    """

    def __init__(self) -> None:
        self._hashers = {name: (hashlib.sha256(), hashlib.sha256()) for name in HASHED_FIELDS}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name in HASHED_FIELDS:
            values, lengths = self._hashers[name]
            for chunk in _chunks(batch.column(name)):
                if pa.types.is_string(chunk.type):
                    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32,
                                            count=len(chunk) + 1, offset=chunk.offset * 4)
                    data = chunk.buffers()[2]
                    if data is not None and len(chunk):
                        values.update(memoryview(data)[offsets[0]:offsets[-1]])
                    lengths.update(np.diff(offsets).astype(">i8").tobytes())
                else:
                    values.update(chunk.cast(pa.int64()).to_numpy().astype(">i8").tobytes())

    def hexdigest(self) -> str:
        outer = hashlib.sha256()
        for name in HASHED_FIELDS:
            values, lengths = self._hashers[name]
            outer.update(f"{name}:{values.hexdigest()}:{lengths.hexdigest()}\n".encode())
        return "sha256:" + outer.hexdigest()


def _chunks(column: pa.Array | pa.ChunkedArray) -> Iterable[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def content_hash(table: pa.Table) -> str:
    """Recompute a file's content hash (wall-clock fields excluded) from its table."""
    hasher = ContentHasher()
    hasher.update(table)
    return hasher.hexdigest()


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
        rows = np.flatnonzero(np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool))
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
           pc.not_equal(col("envelope_version"), ENVELOPE_VERSION).combine_chunks())
    report("event_id_format", "event_id is not evt_ + 32 hex",
           pc.invert(pc.match_substring_regex(col("event_id"), r"^evt_[0-9a-f]{32}$"))
           .combine_chunks())
    report("raw_sha256_format", "raw_sha256 is not 64 hex",
           pc.invert(pc.match_substring_regex(col("raw_sha256"), r"^[0-9a-f]{64}$"))
           .combine_chunks())
    report("provenance_uri", "provenance_uri is not an http(s) URL without credentials",
           pc.invert(pc.match_substring_regex(col("provenance_uri"), r"^https?://[^@\s]+$"))
           .combine_chunks())
    report("empty_record_id", "record_id is empty",
           pc.equal(pc.utf8_length(col("record_id")), 0).combine_chunks())
    if check_duplicates:
        report("duplicate_event_id", "event_id appears more than once",
               _duplicates(col("event_id")))
    seq = col("sequence").combine_chunks().to_numpy()
    bad_seq = np.zeros(n, dtype=bool)
    if n > 1:
        bad_seq[1:] = seq[1:] <= seq[:-1]
    report("sequence_not_monotonic", "sequence does not increase", pa.array(bad_seq))
    if window is not None:
        occ = col("occurred_at")
        start, end = pa.scalar(window.start, _TS), pa.scalar(window.end, _TS)
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


_NIBBLES = np.full(256, 255, dtype=np.uint8)
_NIBBLES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def event_id_keys(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The 64-bit id keys (first 16 hex digits after `evt_`) of an event_id column.

    Decoded column-wise from the string buffer; malformed ids (already reported by the
    format rule) fall back to a hash of the whole string so duplicates still count.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n and arr.null_count == 0:
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1,
                                offset=arr.offset * 4)
        if bool(np.all(np.diff(offsets) == 36)):
            text = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
            nibbles = _NIBBLES[text.reshape(n, 36)[:, 4:20]]
            if not (nibbles == 255).any():
                keys = np.zeros(n, dtype=np.uint64)
                for k in range(16):
                    keys = (keys << np.uint64(4)) | nibbles[:, k].astype(np.uint64)
                return keys
    return np.fromiter(
        (int(e[4:20], 16) if e and len(e) == 36 and all(c in "0123456789abcdef" for c in e[4:])
         else int.from_bytes(hashlib.sha256((e or "").encode()).digest()[:8], "big")
         for e in arr.to_pylist()), dtype=np.uint64, count=n)


def _duplicates(column: pa.ChunkedArray) -> pa.Array:
    counts = pc.value_counts(column.combine_chunks())
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    return pc.is_in(column.combine_chunks(), value_set=repeated)


def _sha_mismatch(table: pa.Table) -> pa.Array:
    # Hashing is the one per-row step left; everything around it stays columnar.
    out = np.zeros(table.num_rows, dtype=bool)
    row = 0
    for batch in table.select(["raw", "raw_sha256"]).to_batches():
        raws = batch.column(0).cast(pa.binary()).to_pylist()
        digests = [hashlib.sha256(v).hexdigest() if v is not None else "" for v in raws]
        out[row:row + len(digests)] = pc.not_equal(
            pa.array(digests, pa.string()), batch.column(1)).to_numpy(zero_copy_only=False)
        row += len(digests)
    return pa.array(out)
