"""Blocking asset checks that gate everything downstream of a connector asset.

One check per asset per rule, ordinary (unpartitioned) and blocking: a check covers every
partition its run materialized and reports a verdict per partition in its metadata.
Failures are ERROR severity, so the check step fails and downstream assets are skipped.
"""

# No `from __future__ import annotations`: Dagster inspects the decorated functions' real
# annotations to find the context type and resources.

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    MetadataValue,
    PartitionKeyRange,
    PartitionsDefinition,
    asset_check,
)

from ..core.catalog import ResolvedProfile
from ..core.plan import build_plan
from ..core.report import Invocation, compare_to_golden, document
from ..core.windows import Window
from ..runtime.envelope import ContentHasher, validate_envelope_stream
from ._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from .metadata import PartitionMetadata, StoredMetadata
from .partitions import window_for_partition
from .recordings import rederive
from .resources import ChartlyResource, StorageConfig

ENVELOPE_CHECK = "envelope_valid"
DETERMINISM_CHECK = "deterministic"
SAMPLE_PARTITIONS = 20
M = TypeVar("M", bound=StoredMetadata)


@dataclass(frozen=True)
class CheckedPartition(Generic[M]):
    """One partition a check looks at, with the metadata of its newest materialization."""

    key: str
    metadata: M


def partitions_to_check(context: AssetCheckExecutionContext, key: AssetKey,
                        partitions_def: PartitionsDefinition,
                        metadata_type: type[M] = PartitionMetadata,  # type: ignore[assignment]
                        ) -> list[CheckedPartition[M]]:
    """What this check run covers, its metadata read as `metadata_type`.

    In the asset's own run: the partitions that run materialized. Run alone (from the UI or
    a job without the asset): the partitions its tags name, else the newest materialization.
    """
    instance = context.instance
    records = instance.get_records_for_run(
        context.run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    found = {}
    for record in records:
        event = record.event_log_entry
        mat = event.asset_materialization
        if mat is not None and mat.asset_key == key and mat.partition is not None:
            found[mat.partition] = CheckedPartition(mat.partition,
                                                  metadata_type.extract(mat.metadata))
    if found:
        return [found[k] for k in sorted(found)]
    tags = context.run.tags
    if PARTITION_NAME_TAG in tags:
        wanted = [tags[PARTITION_NAME_TAG]]
    elif ASSET_PARTITION_RANGE_START_TAG in tags:
        wanted = list(partitions_def.get_partition_keys_in_range(PartitionKeyRange(
            tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG])))
    else:
        latest = instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=1)
        wanted = [r.partition_key for r in latest.records if r.partition_key]
    out = []
    for partition in wanted:
        rows = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        if rows and rows[0].asset_materialization is not None:
            out.append(CheckedPartition(partition, metadata_type.extract(
                rows[0].asset_materialization.metadata)))
    return out


def judge_partitions(context: AssetCheckExecutionContext, key: AssetKey,
                     partitions_def: PartitionsDefinition,
                     judge: Callable[[CheckedPartition[M], Window], dict[str, Any]],
                     metadata_type: type[M] = PartitionMetadata,  # type: ignore[assignment]
                     ) -> dict[str, dict[str, Any]]:
    """One verdict per partition this check run covers, keyed by partition."""
    return {partition.key: judge(partition, window_for_partition(partitions_def, partition.key))
            for partition in partitions_to_check(context, key, partitions_def, metadata_type)}


def _result(name: str, verdicts: dict[str, dict[str, Any]],
            extra: dict[str, Any] | None = None, *, other_failure: bool = False,
            severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    """Per-partition verdicts in metadata; failing partitions first, a bounded sample."""
    failing = sorted(pk for pk, v in verdicts.items() if not v["ok"])
    shown = {pk: verdicts[pk] for pk in (failing or sorted(verdicts))[:SAMPLE_PARTITIONS]}
    meta: dict[str, Any] = {
        "partitions_checked": len(verdicts),
        "partitions_failed": len(failing),
        "failing_partitions": MetadataValue.json(failing),
        "verdicts": MetadataValue.json(shown),
        **(extra or {}),
    }
    if not verdicts:
        meta["note"] = "no materialized partition to check"
    return AssetCheckResult(check_name=name, passed=not failing and not other_failure,
                            severity=severity, metadata=meta)


def _envelope_verdict(storage: StorageConfig, partition: CheckedPartition,
                      window: Window) -> dict[str, Any]:
    uri = partition.metadata.uri
    if not uri:
        return {"ok": False, "findings": [{"code": "no_file", "message": "no file URI"}]}
    try:
        findings, rows = validate_envelope_stream(storage.iter_batches(uri), window)
    except (OSError, ValueError) as exc:
        return {"ok": False, "uri": uri,
                "findings": [{"code": "unreadable", "message": type(exc).__name__}]}
    return {"ok": not findings, "rows": rows, "uri": uri, "findings": findings}


def build_envelope_check(key: AssetKey, partitions_def: PartitionsDefinition
                         ) -> AssetChecksDefinition:
    """`envelope_valid`: every row of every checked partition conforms to the envelope."""

    @asset_check(asset=key, name=ENVELOPE_CHECK, blocking=True, description=(
        "Every row matches the envelope schema, event ids are unique, occurrence times lie "
        "inside the partition window and raw_sha256 matches raw."))
    def _envelope_valid(context: AssetCheckExecutionContext,
                        chartly: ChartlyResource) -> AssetCheckResult:
        verdicts = judge_partitions(
            context, key, partitions_def,
            lambda partition, window: _envelope_verdict(chartly.storage, partition, window))
        return _result(ENVELOPE_CHECK, verdicts)

    return _envelope_valid


def golden_findings(resolved: ResolvedProfile, project_root: Path) -> list[dict[str, Any]]:
    """Differences between the profile's golden plan and the plan built now (none: no golden).

    The window comes from the golden file itself, so the check does not depend on which
    window the golden was written for.
    """
    if not resolved.spec.golden:
        return []
    path = project_root / resolved.spec.golden
    try:
        golden = json.loads(path.read_text(encoding="utf-8"))
        header = golden["header"]
        window = Window.parse(header["window"]["start"], header["window"]["end"])
        inv = Invocation(env=header["env"], tenant=header["tenant"],
                         project=header["project"], mode="plan")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [{"code": "golden_unreadable", "path": str(resolved.spec.golden),
                 "message": type(exc).__name__}]
    actual = document(inv, resolved, window, build_plan(resolved, window))
    return compare_to_golden(actual, golden)


def _determinism_verdict(resolved: ResolvedProfile, storage: StorageConfig,
                         partition: CheckedPartition, window: Window) -> dict[str, Any]:
    meta = partition.metadata
    problems: list[dict[str, Any]] = []
    if meta.resolved_hash != resolved.hash:
        problems.append({"code": "profile_drift", "materialized": meta.resolved_hash,
                         "current": resolved.hash})
    plan_hash = build_plan(resolved, window).plan_hash
    if meta.plan_hash != plan_hash:
        problems.append({"code": "plan_hash_mismatch", "materialized": meta.plan_hash,
                         "recomputed": plan_hash})
    uri = meta.uri
    try:
        actual = _streamed_content_hash(storage, uri) if uri else None
    except (OSError, ValueError) as exc:
        actual = f"unreadable: {type(exc).__name__}"
    if actual != meta.content_hash:
        problems.append({"code": "content_hash_mismatch", "materialized":
                         meta.content_hash, "recomputed": actual, "uri": uri})
    derivation, rederive_problems = rederive(resolved, meta, window)
    problems += rederive_problems
    return {"ok": not problems, **derivation, "findings": problems}


def _streamed_content_hash(storage: StorageConfig, uri: str) -> str:
    """The file's content hash, batch by batch (the hash does not depend on batching)."""
    hasher = ContentHasher()
    for batch in storage.iter_batches(uri):
        hasher.update(batch)
    return hasher.hexdigest()


def build_determinism_check(resolved: ResolvedProfile, key: AssetKey,
                            partitions_def: PartitionsDefinition, project_root: Path
                            ) -> AssetChecksDefinition:
    """`deterministic`: plan, file and profile are what the materialization recorded."""

    @asset_check(asset=key, name=DETERMINISM_CHECK, blocking=True, description=(
        "The partition's plan hash recomputes from the current resolved profile, the file's "
        "content hash matches its metadata, the profile has not drifted since it was "
        "materialized, and the golden plan (if the profile names one) still matches. A "
        "recorded partition is re-derived from its recording (verdict 're-derived'), "
        "otherwise only its integrity is proven ('integrity only')."))
    def _deterministic(context: AssetCheckExecutionContext,
                       chartly: ChartlyResource) -> AssetCheckResult:
        verdicts = judge_partitions(
            context, key, partitions_def,
            lambda partition, window: _determinism_verdict(resolved, chartly.storage,
                                                           partition, window))
        golden = golden_findings(resolved, project_root)
        return _result(DETERMINISM_CHECK, verdicts,
                       {"golden": resolved.spec.golden or "none",
                        "golden_ok": not golden,
                        "golden_differences": MetadataValue.json(golden[:10]),
                        PartitionMetadata.key("resolved_hash"): resolved.hash},
                       other_failure=bool(golden))

    return _deterministic


def build_profile_checks(resolved: ResolvedProfile, key: AssetKey,
                         partitions_def: PartitionsDefinition, project_root: Path
                         ) -> list[AssetChecksDefinition]:
    """Both checks of one connector asset."""
    return [build_envelope_check(key, partitions_def),
            build_determinism_check(resolved, key, partitions_def, project_root)]
