"""What the integration stores on Dagster events, typed, with one writer and one reader.

A partition's materialization is written by `PartitionMetadata.to_metadata()` and read back
(by the checks, the resume logic, examples and tests) with `PartitionMetadata.extract()`,
so a key is spelled in one place and read back with its type; a renamed field cannot
silently break a resume. Tags and the spec's definition metadata use their own keys: a key
means one thing wherever it appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from dagster import MetadataValue, TableSchema

NAMESPACE = "chartly"
PREFIX = f"{NAMESPACE}/"


def raw_value(value: Any) -> Any:
    """The plain Python value behind a stored metadata entry (`MetadataValue.value`)."""
    return getattr(value, "value", value)


def plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A stored metadata mapping with every `MetadataValue` unwrapped."""
    return {key: raw_value(value) for key, value in metadata.items()}


class StoredMetadata:
    """The one writer and reader of a frozen dataclass stored as materialization metadata.

    Fields are stored under `chartly/<field>` (column schema under Dagster's key), plus
    Dagster's row count (the `records` field) and URI, so the UI shows them natively.
    """

    records: int
    uri: str | None

    #: fields stored as JSON
    _JSON: ClassVar[frozenset[str]] = frozenset()
    #: fields stored under Dagster's key instead of ours
    _DAGSTER: ClassVar[Mapping[str, str]] = {"column_schema": "dagster/column_schema"}
    ROW_COUNT_KEY: ClassVar[str] = "dagster/row_count"
    URI_KEY: ClassVar[str] = "dagster/uri"

    @classmethod
    def key(cls, field_name: str) -> str:
        """The stored key of one field (what the UI's metadata table shows)."""
        if field_name not in {f.name for f in fields(cls)}:
            raise KeyError(field_name)
        return cls._DAGSTER.get(field_name, f"{PREFIX}{field_name}")

    def to_metadata(self) -> dict[str, Any]:
        """The materialization metadata: every field, plus Dagster's row count and URI."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._JSON:
                value = MetadataValue.json(list(value) if isinstance(value, tuple) else value)
            out[self.key(f.name)] = value
        out[self.ROW_COUNT_KEY] = self.records
        if self.uri:
            out[self.URI_KEY] = self.uri
        return out

    @classmethod
    def extract(cls, metadata: Mapping[str, Any]) -> Self:
        """Read a stored (or just written) mapping back; unknown keys are ignored."""
        values = plain(metadata)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            stored = cls.key(f.name)
            if stored in values:
                value = values[stored]
                kwargs[f.name] = tuple(value or ()) if f.default == () else value
        return cls(**kwargs)


@dataclass(frozen=True)
class PartitionMetadata(StoredMetadata):
    """One partition's materialization: the window, its file, hashes, counts and checkpoint.

    Stored by `StoredMetadata` (`chartly/<field>`, plus Dagster's row count, column schema
    and URI). Every field has a default so that `extract` reads a materialization written
    by an older release (or by something else) without raising; readers treat None as
    "not recorded".
    """

    profile_ref: str | None = None
    resolved_hash: str | None = None
    plan_hash: str | None = None
    content_hash: str | None = None
    env: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    uri: str | None = None
    records: int = 0
    pages: int = 0
    bytes: int = 0
    file_bytes: int = 0
    requests: int = 0
    retries: int = 0
    dropped_out_of_window: int = 0
    duplicates: int = 0
    resumed_from_page: int = 0
    #: the window's file came from an earlier run of this run's lineage (verified, not fetched)
    reused: bool = False
    duration_seconds: float = 0.0
    watermark: str | None = None
    previous_watermark: str | None = None
    checkpoint: dict[str, Any] | None = None
    previous_checkpoint: dict[str, Any] | None = None
    findings: tuple[dict[str, Any], ...] = ()
    #: `complete`, `capped` or `stopped_on_finding` (the runtime's `WindowResult.outcome`)
    outcome: str | None = None
    #: how the window ended: an explicit end (`runtime.paginate.EXPLICIT_ENDS`), a cap
    #: (`cap:maxPages`, ...) or `stopped_on_finding`; None in materializations of old releases
    ended_by: str | None = None
    #: the cap that stopped the window (`max_pages`, `max_records`, `max_bytes`), if any
    capped_by: str | None = None
    #: the total the upstream declared for the window (body field or header), if it did
    declared_total: int | None = None
    #: records the upstream served, before window filtering (what a declared total counts)
    records_served: int | None = None
    column_schema: TableSchema | None = None
    #: the recording of the window's responses (none: not recorded)
    response_hash: str | None = None
    recording_uri: str | None = None
    recording_bytes: int = 0
    recorded_responses: int = 0

    _JSON: ClassVar[frozenset[str]] = frozenset({"checkpoint", "previous_checkpoint",
                                                 "findings"})


@dataclass(frozen=True)
class TypedPartitionMetadata(StoredMetadata):
    """One partition of a typed asset: its file, rows and what typing it observed.

    `observed` (column name -> type) is what the inferred drift check compares between
    partitions; `column_report` (per column: nulls, conversion errors, row samples) is what
    the declared one judges.
    """

    window_start: str | None = None
    window_end: str | None = None
    uri: str | None = None
    records: int = 0
    columns: str | None = None
    conversion_errors: int = 0
    observed: dict[str, str] | None = None
    column_report: dict[str, Any] | None = None
    column_schema: TableSchema | None = None

    _JSON: ClassVar[frozenset[str]] = frozenset({"observed", "column_report"})


# Page observations: what a re-executed run reads back to resume a window in flight.
OBSERVATION_KIND = f"{PREFIX}observation"
PAGE_OBSERVATION = "page"
WINDOW_COMPLETE_OBSERVATION = "window_complete"
PAGE = f"{PREFIX}page"
PLAN_HASH = PartitionMetadata.key("plan_hash")
CONTENT_HASH = PartitionMetadata.key("content_hash")
RECORDS = PartitionMetadata.key("records")
BYTES = PartitionMetadata.key("bytes")

# Asset tags: short, tag-safe values (Dagster's tag alphabet, at most 63 characters).
TAG_ENV = f"{PREFIX}env"
TAG_TENANT = f"{PREFIX}tenant"
TAG_PROJECT = f"{PREFIX}project"
TAG_CONNECTOR = f"{PREFIX}connector"
TAG_PAGINATION = f"{PREFIX}pagination"
TAG_CADENCE = f"{PREFIX}cadence"
TAG_VERSION = f"{PREFIX}version"
TAG_VARIANT = f"{PREFIX}variant"
# Full refs and hashes do not fit Dagster's tag-value rules: no tag holds a cut-down copy.

# Definition metadata of a connector asset's spec (shown on the asset page). The full ref
# and hash use the same keys as the materialization: the same value for the same key.
DEF_PROFILE_REF = PartitionMetadata.key("profile_ref")
DEF_RESOLVED_HASH = PartitionMetadata.key("resolved_hash")
DEF_SOURCE_PATH = f"{PREFIX}source_path"
#: the columns a typed asset's files have (connector: the envelope; typed: join + declared)
DEF_COLUMN_SCHEMA = PartitionMetadata.key("column_schema")
#: how a typed asset gets its columns: "declared" in the profile or "inferred"
DEF_COLUMNS_SOURCE = TypedPartitionMetadata.key("columns")
# Objects the decorator leaves on the spec for the resource to find at run time (the
# dagster-dlt convention); never serialized, so they stay in the code location.
META_KEY_PROFILE = "chartly_dagster/profile"
META_KEY_TRANSLATOR = "chartly_dagster/translator"
