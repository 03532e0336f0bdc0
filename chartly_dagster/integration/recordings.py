"""The Dagster side of recordings: what a partition's metadata keeps of its recording, and
the determinism check's re-derivation of a partition from it.

A partition recorded while it was fetched can be proven deterministic without its
upstream: its responses are replayed through the same executor into a scratch file and the
content hashes compared. Without a recording the check can only prove integrity.
"""

from __future__ import annotations

import tempfile
from typing import Any

from ..core.catalog import ResolvedProfile
from ..core.errors import ChartlyError
from ..core.plan import build_plan
from ..core.windows import Window
from ..runtime.executor import NetworkOptions, WindowResult, WindowTarget, fetch_window
from ..runtime.recording import ReplayFrom
from .metadata import PartitionMetadata

REDERIVED = "re-derived"
INTEGRITY_ONLY = "integrity only"


def recording_fields(result: WindowResult) -> dict[str, Any]:
    """The recording's `PartitionMetadata` fields (none when it was not recorded)."""
    recorded = result.recorded
    if recorded is None:
        return {}
    return {"response_hash": recorded.response_hash, "recording_uri": recorded.uri,
            "recording_bytes": recorded.bytes, "recorded_responses": recorded.responses}


def rederive(resolved: ResolvedProfile, meta: PartitionMetadata,
             window: Window) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(verdict fields, problems) of re-deriving one partition from its recording.

    The replay streams page by page into a scratch Parquet file, exactly as a fetch
    would, so a large partition costs no more memory to check than to fetch.
    """
    uri = meta.recording_uri
    if not uri:
        return {"derivation": INTEGRITY_ONLY}, []
    plan = build_plan(resolved, window)
    if plan.plan_hash != meta.plan_hash:
        # The check already fails on the changed plan; responses to the old plan's requests
        # cannot show what the new plan would derive.
        return {"derivation": INTEGRITY_ONLY, "recording": uri,
                "note": "the plan changed since the partition was recorded"}, []
    with tempfile.TemporaryDirectory(prefix="chartly-rederive-") as scratch:
        try:
            result = fetch_window(
                resolved, window, plan, target=WindowTarget.at(scratch),
                network=NetworkOptions(meta.env or "",
                                       recording=ReplayFrom(uri, meta.response_hash)))
        except ChartlyError as exc:
            return {"derivation": REDERIVED, "recording": uri}, [
                {"code": "rederivation_failed", "error": exc.code, "message": exc.message}]
    fields = {"derivation": REDERIVED, "recording": uri,
              "rederived_content_hash": result.content_hash}
    if result.content_hash != meta.content_hash:
        return fields, [{"code": "rederived_content_mismatch",
                         "materialized": meta.content_hash,
                         "rederived": result.content_hash, "recording": uri}]
    return fields, []
