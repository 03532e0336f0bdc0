"""Metadata keys the integration writes and reads back.

The asset writes them, the checks and the resume logic read them back from the instance, so
they are named once here; a renamed key would otherwise silently break a resume.
"""

from __future__ import annotations

from typing import Any

PREFIX = "chartly/"

PROFILE_REF = f"{PREFIX}profile_ref"
RESOLVED_HASH = f"{PREFIX}resolved_hash"
PLAN_HASH = f"{PREFIX}plan_hash"
CONTENT_HASH = f"{PREFIX}content_hash"
CHECKPOINT = f"{PREFIX}checkpoint"
WINDOW_START = f"{PREFIX}window_start"
WINDOW_END = f"{PREFIX}window_end"
RECORDS = f"{PREFIX}records"
PAGES = f"{PREFIX}pages"
BYTES = f"{PREFIX}bytes"
FILE_BYTES = f"{PREFIX}file_bytes"
REQUESTS = f"{PREFIX}requests"
RETRIES = f"{PREFIX}retries"
DROPPED_OUT_OF_WINDOW = f"{PREFIX}dropped_out_of_window"
DUPLICATES = f"{PREFIX}duplicates"
FINDINGS = f"{PREFIX}findings"
URI = f"{PREFIX}uri"
ENV = f"{PREFIX}env"
WATERMARK = f"{PREFIX}watermark"
PREVIOUS_WATERMARK = f"{PREFIX}previous_watermark"
PREVIOUS_CHECKPOINT = f"{PREFIX}previous_checkpoint"
RESUMED_FROM_PAGE = f"{PREFIX}resumed_from_page"
DURATION_SECONDS = f"{PREFIX}duration_seconds"
RESPONSE_HASH = f"{PREFIX}response_hash"
RECORDING_URI = f"{PREFIX}recording_uri"
RECORDING_BYTES = f"{PREFIX}recording_bytes"
RECORDED_RESPONSES = f"{PREFIX}recorded_responses"

# Observation keys: what a page observation carries so a re-executed run can resume.
OBSERVATION_KIND = f"{PREFIX}observation"
PAGE_OBSERVATION = "page"
PAGE = f"{PREFIX}page"

# Dagster's own keys, so the UI shows row counts and column schemas natively.
ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"
URI_DAGSTER = "dagster/uri"

# Asset tags (values must be short, tag-safe strings).
TAG_ENV = "chartly/env"
TAG_TENANT = "chartly/tenant"
TAG_PROJECT = "chartly/project"
TAG_CONNECTOR = "chartly/connector"
TAG_PAGINATION = "chartly/pagination"
TAG_CADENCE = "chartly/cadence"
# Full refs and hashes do not fit Dagster's tag-value rules, so the spec carries them as
# definition metadata (shown on the asset page) next to these tags.
DEF_PROFILE_REF = PROFILE_REF
DEF_RESOLVED_HASH = RESOLVED_HASH


def raw_value(value: Any) -> Any:
    """The plain Python value behind a stored metadata entry (`MetadataValue.value`)."""
    return getattr(value, "value", value)
