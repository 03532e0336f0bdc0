"""The envelope's shape: the Arrow schema of one row, its version and shipped JSON Schema,
and which columns the content hash covers and which are wall clock.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa

ENVELOPE_VERSION = "1.0"
TIMESTAMP = pa.timestamp("us", tz="UTC")
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
    pa.field("occurred_at", TIMESTAMP, nullable=False),
    pa.field("collected_at", TIMESTAMP, nullable=False),
    pa.field("ingested_at", TIMESTAMP, nullable=False),
    pa.field("window_start", TIMESTAMP, nullable=False),
    pa.field("window_end", TIMESTAMP, nullable=False),
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


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def string_offsets(chunk: pa.Array) -> np.ndarray:
    """A string array's value offsets into its data buffer (a sliced array's own ones), so
    values can be read as views of the buffer without a Python object per value."""
    return np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=len(chunk) + 1,
                         offset=chunk.offset * 4)
