"""Blocking asset checks that gate everything downstream of a connector asset.

Three checks per connector asset, `envelope_valid`, `deterministic` and `complete`, run in
one step that reads each partition's file once. They are ordinary (unpartitioned) checks:
Dagster 1.13 stores a partitioned check's result of a single-run range without a
partition and leaves every per-partition row PLANNED, so instead each check covers every
partition its run materialized and reports a verdict per partition in its metadata.
Failures are ERROR severity, so the check step fails and downstream assets are skipped.
"""

# No `from __future__ import annotations`: Dagster inspects the decorated functions' real
# annotations to find the context type and resources.

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    EventLogRecord,
    MetadataValue,
    PartitionKeyRange,
    PartitionsDefinition,
    multi_asset_check,
)

from ..core.catalog import ResolvedProfile
from ..core.plan import build_plan
from ..core.report import Invocation, compare_to_golden, document
from ..core.windows import Window
from ..runtime.envelope import ContentHasher, validate_envelope_stream
from ..runtime.paginate import CAP_ENDS, EXPLICIT_ENDS
from ._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    AssetCheckEvaluationTargetMaterializationData,
)
from .metadata import PartitionMetadata, StoredMetadata
from .partitions import window_for_partition
from .recordings import rederive
from .resources import ChartlyResource, StorageConfig

ENVELOPE_CHECK = "envelope_valid"
DETERMINISM_CHECK = "deterministic"
COMPLETE_CHECK = "complete"
CHECK_NAMES = (ENVELOPE_CHECK, DETERMINISM_CHECK, COMPLETE_CHECK)
SAMPLE_PARTITIONS = 20
M = TypeVar("M", bound=StoredMetadata)


@dataclass(frozen=True)
class CheckedPartition(Generic[M]):
    """One partition a check looks at, with the metadata of its newest materialization and
    a pointer to that materialization (what a per-partition evaluation is of)."""

    key: str
    metadata: M
    target: AssetCheckEvaluationTargetMaterializationData

    @classmethod
    def of(cls, record: EventLogRecord, metadata_type: type[M]) -> "CheckedPartition[M] | None":
        """The partition a materialization record stored, or None for another event."""
        entry = record.event_log_entry
        mat = entry.asset_materialization
        if mat is None or mat.partition is None:
            return None
        return cls(mat.partition, metadata_type.extract(mat.metadata),
                   AssetCheckEvaluationTargetMaterializationData(
                       storage_id=record.storage_id, run_id=entry.run_id,
                       timestamp=entry.timestamp))


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
        mat = record.event_log_entry.asset_materialization
        partition = (CheckedPartition.of(record, metadata_type) if mat and mat.asset_key == key
                     else None)
        if partition is not None:
            found[partition.key] = partition
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
    for pk in wanted:
        rows = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1).records
        partition = CheckedPartition.of(rows[0], metadata_type) if rows else None
        if partition is not None:
            out.append(partition)
    return out


def judge_partitions(context: AssetCheckExecutionContext, key: AssetKey,
                     partitions_def: PartitionsDefinition, name: str,
                     judge: Callable[[CheckedPartition[M], Window], dict[str, Any]],
                     metadata_type: type[M] = PartitionMetadata,  # type: ignore[assignment]
                     *, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
                     blocking: bool = True) -> dict[str, dict[str, Any]]:
    """One verdict per partition this check run covers, keyed by partition, each also
    logged as that partition's own evaluation (see `_partition_evaluation`)."""
    verdicts = {}
    for partition in partitions_to_check(context, key, partitions_def, metadata_type):
        verdict = judge(partition, window_for_partition(partitions_def, partition.key))
        context.op_execution_context.log_event(_partition_evaluation(
            key, name, partition, verdict, severity=severity, blocking=blocking))
        verdicts[partition.key] = verdict
    return verdicts


def _failed_summary(verdict: dict[str, Any]) -> str:
    """`failed: <codes>` for `by_partition`; findings name a `code` (or a typed `column`)."""
    names = sorted({str(f.get("code") or f.get("column") or "")
                    for f in verdict.get("findings", ())} - {""})
    return "failed: " + ", ".join(names) if names else "failed"


def _result(name: str, verdicts: dict[str, dict[str, Any]],
            extra: dict[str, Any] | None = None, *, other_failure: bool = False,
            severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    """Per-partition verdicts in metadata: every partition's pass/fail (with the codes that
    failed it) in `by_partition`, and full verdicts for a bounded sample, failing first."""
    failing = sorted(pk for pk, v in verdicts.items() if not v["ok"])
    shown = {pk: verdicts[pk] for pk in (failing or sorted(verdicts))[:SAMPLE_PARTITIONS]}
    by_partition = {pk: "passed" if v["ok"] else _failed_summary(v)
                    for pk, v in sorted(verdicts.items())}
    meta: dict[str, Any] = {
        "partitions_checked": len(verdicts),
        "partitions_failed": len(failing),
        "failing_partitions": MetadataValue.json(failing),
        "by_partition": MetadataValue.json(by_partition),
        "verdicts": MetadataValue.json(shown),
        **(extra or {}),
    }
    if not verdicts:
        meta["note"] = "no materialized partition to check"
    return AssetCheckResult(check_name=name, passed=not failing and not other_failure,
                            severity=severity, metadata=meta)


def _partition_evaluation(key: AssetKey, name: str, partition: CheckedPartition,
                          verdict: dict[str, Any], *,
                          severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
                          blocking: bool = True) -> AssetCheckEvaluation:
    """One partition's verdict as its own check evaluation, stored under its partition.

    Dagster plans one execution per partition of a range run even for an unpartitioned
    check; this resolves each of them, so the partition's check history shows its verdict
    and no row stays PLANNED. The check's own result (all partitions) is what gates.
    """
    return AssetCheckEvaluation(
        asset_key=key, check_name=name, passed=bool(verdict["ok"]),
        metadata={"verdict": MetadataValue.json(verdict)},
        target_materialization_data=partition.target, severity=severity,
        blocking=blocking, partition=partition.key)


@dataclass(frozen=True)
class FileScan:
    """What one streamed read of a partition's file tells all checks: the envelope findings,
    the rows read and the content hash (None: the file could not be read)."""

    uri: str | None
    findings: list[dict[str, Any]]
    rows: int
    content_hash: str | None
    error: str | None = None


def scan_file(storage: StorageConfig, uri: str | None, window: Window) -> FileScan:
    """Validate envelopes and hash the content in one pass over the file, batch by batch.

    The hash covers every batch even when validation stops early (a schema mismatch), so
    each check sees the same, whole file; nothing larger than a batch is held.
    """
    if not uri:
        return FileScan(uri, [], 0, None, "no file URI")
    hasher = ContentHasher()

    def hashed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            hasher.update(batch)
            yield batch

    try:
        stream = hashed(storage.iter_batches(uri))
        findings, rows = validate_envelope_stream(stream, window)
        for _ in stream:  # the rest of the file, when validation stopped early
            pass
        return FileScan(uri, findings, rows, hasher.hexdigest())
    except (OSError, ValueError, KeyError) as exc:
        return FileScan(uri, [], 0, None, type(exc).__name__)


def _envelope_verdict(scan: FileScan) -> dict[str, Any]:
    if scan.error is not None:
        code = "no_file" if scan.uri is None else "unreadable"
        return {"ok": False, "uri": scan.uri,
                "findings": [{"code": code, "message": scan.error}]}
    return {"ok": not scan.findings, "rows": scan.rows, "uri": scan.uri,
            "findings": scan.findings}


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


def _determinism_verdict(resolved: ResolvedProfile, partition: CheckedPartition,
                         window: Window, scan: FileScan,
                         golden: list[dict[str, Any]]) -> dict[str, Any]:
    """Plan, file and profile are what the materialization recorded; a golden plan that no
    longer matches fails every partition built from the profile."""
    meta = partition.metadata
    problems: list[dict[str, Any]] = []
    if golden:
        problems.append({"code": "golden_mismatch", "golden": resolved.spec.golden,
                         "differences": len(golden)})
    if meta.resolved_hash != resolved.hash:
        problems.append({"code": "profile_drift", "materialized": meta.resolved_hash,
                         "current": resolved.hash})
    plan_hash = build_plan(resolved, window).plan_hash
    if meta.plan_hash != plan_hash:
        problems.append({"code": "plan_hash_mismatch", "materialized": meta.plan_hash,
                         "recomputed": plan_hash})
    actual = scan.content_hash if scan.error is None else f"unreadable: {scan.error}"
    if actual != meta.content_hash:
        problems.append({"code": "content_hash_mismatch", "materialized":
                         meta.content_hash, "recomputed": actual, "uri": scan.uri})
    derivation, rederive_problems = rederive(resolved, meta, window)
    problems += rederive_problems
    return {"ok": not problems, **derivation, "findings": problems}


#: Findings that say records may be missing from a window that otherwise looks finished.
TRUNCATION_FINDINGS = frozenset({"possibly_truncated", "incomplete_window"})
#: A cap as the profile spells it (`limits.<key>`), for messages that name it.
_CAP_KEYS = {"max_pages": "limits.maxPages", "max_records": "limits.maxRecords",
             "max_bytes": "limits.maxBytes"}


def completeness_verdict(meta: PartitionMetadata) -> dict[str, Any]:
    """Whether a window provably holds everything the upstream had for it.

    Complete means: it ended on an explicit end of data (`EXPLICIT_ENDS`), not at a cap; a
    declared total equals the records served; and no finding says records may be missing.
    A materialization that does not record how its window ended is not complete either:
    nothing shows it is.
    """
    problems: list[dict[str, Any]] = []
    ended_by = meta.ended_by
    cap = meta.capped_by or (ended_by.removeprefix("cap:") if ended_by in CAP_ENDS else None)
    if cap is not None:
        name = _CAP_KEYS.get(cap, f"limits.{cap}")
        problems.append({"code": "capped", "cap": name, "message": (
            f"the window stopped at the cap {name} with more pages to fetch: raise the cap "
            "(profile limits or the run's flags) and materialize the partition again")})
    elif ended_by is None:
        problems.append({"code": "end_not_recorded", "message": (
            "the materialization does not record how its window ended (written by an older "
            "release): materialize the partition again")})
    elif ended_by not in EXPLICIT_ENDS:
        problems.append({"code": "no_explicit_end", "ended_by": ended_by, "message": (
            f"the window ended by {ended_by}, not by an explicit end of data")})
    total, served = meta.declared_total, meta.records_served
    if cap is None and total is not None and served != total:  # a cap explains a shortfall
        problems.append({"code": "incomplete_window", "expected": total, "got": served,
                         "message": f"the upstream declared {total} records, {served} were "
                                    "served"})
    problems += [{"code": f["code"], "message": f.get("message", "")} for f in meta.findings
                 if f.get("code") in TRUNCATION_FINDINGS]
    return {"ok": not problems, "ended_by": ended_by, "outcome": meta.outcome,
            "findings": problems}


_DESCRIPTIONS = {
    ENVELOPE_CHECK: (
        "Every row matches the envelope schema, event ids are unique, occurrence times lie "
        "inside the partition window and raw_sha256 matches raw."),
    DETERMINISM_CHECK: (
        "The partition's plan hash recomputes from the current resolved profile, the file's "
        "content hash matches its metadata, the profile has not drifted since it was "
        "materialized, and the golden plan (if the profile names one) still matches. A "
        "recorded partition is re-derived from its recording (verdict 're-derived'), "
        "otherwise only its integrity is proven ('integrity only')."),
    COMPLETE_CHECK: (
        "The window ended on an explicit end of data (not a cap, not a stop on a finding), "
        "a declared total matched the records served, and no finding says records may be "
        "missing. A capped window fails this check, naming the cap."),
}


def build_profile_checks(resolved: ResolvedProfile, key: AssetKey,
                         partitions_def: PartitionsDefinition, project_root: Path
                         ) -> list[AssetChecksDefinition]:
    """The three blocking checks of one connector asset, run as one step.

    One step reads each partition's file once for all of them: envelope validity and the
    content hash come from the same stream, and `complete` needs only the metadata. The
    checks can be run one at a time (subsetting); a file is read only when a check that
    needs it was selected.
    """
    specs = [AssetCheckSpec(name, asset=key, blocking=True, description=_DESCRIPTIONS[name])
             for name in CHECK_NAMES]

    @multi_asset_check(specs=specs, name=f"{key.to_python_identifier()}__checks",
                       can_subset=True, description=(
                           f"Blocking checks of {key.to_user_string()}: "
                           f"{', '.join(CHECK_NAMES)}."))
    def _checks(context: AssetCheckExecutionContext,
                chartly: ChartlyResource) -> Iterator[AssetCheckResult]:
        selected = {k.name for k in context.selected_asset_check_keys}
        reads_file = bool(selected & {ENVELOPE_CHECK, DETERMINISM_CHECK})
        verdicts: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in selected}
        golden = (golden_findings(resolved, project_root) if DETERMINISM_CHECK in selected
                  else [])
        checked = partitions_to_check(context, key, partitions_def)
        for partition in checked:
            window = window_for_partition(partitions_def, partition.key)
            scan = (scan_file(chartly.storage, partition.metadata.uri, window)
                    if reads_file else None)
            if scan is not None and ENVELOPE_CHECK in selected:
                verdicts[ENVELOPE_CHECK][partition.key] = _envelope_verdict(scan)
            if scan is not None and DETERMINISM_CHECK in selected:
                verdicts[DETERMINISM_CHECK][partition.key] = _determinism_verdict(
                    resolved, partition, window, scan, golden)
            if COMPLETE_CHECK in selected:
                verdicts[COMPLETE_CHECK][partition.key] = completeness_verdict(
                    partition.metadata)
        for name in CHECK_NAMES:
            if name not in selected:
                continue
            for partition in checked:
                context.op_execution_context.log_event(_partition_evaluation(
                    key, name, partition, verdicts[name][partition.key]))
            if name == DETERMINISM_CHECK:
                yield _result(name, verdicts[name],
                              {"golden": resolved.spec.golden or "none",
                               "golden_ok": not golden,
                               "golden_differences": MetadataValue.json(golden[:10]),
                               PartitionMetadata.key("resolved_hash"): resolved.hash},
                              other_failure=bool(golden))
            else:
                yield _result(name, verdicts[name])

    return [_checks]
