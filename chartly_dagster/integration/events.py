"""Turn one profile's partitions into Dagster events while the windows are fetched.

Like dagster-sling's event iterator: the run reports as the work progresses. Each page
that is durably staged becomes an `AssetObservation` (the resume point if the run dies),
and each finished window gets its own per-partition metadata; the single
`MaterializeResult` at the end carries nothing partition-specific, because Dagster would
copy it onto every partition of a range run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    Failure,
    MetadataValue,
    PartitionsDefinition,
    TableColumn,
    TableSchema,
)

from ..core.catalog import ResolvedProfile
from ..core.errors import ChartlyError
from ..core.plan import build_plan
from ..core.refs import format_ref
from ..runtime.egress import EnvPolicy
from ..runtime.executor import (
    NetworkOptions,
    PageProgress,
    RunEvent,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from ..runtime.recording import RecordTo, recording_enabled
from ..runtime.secrets import SecretResolver
from ..runtime.storage import Storage
from . import metadata as md
from .checkpoints import last_materialization, resume_checkpoint
from .partitions import previous_partition_key, window_for_partition
from .recordings import recording_metadata


def column_schema(result: WindowResult) -> TableSchema:
    """The written file's Arrow schema as Dagster's column schema (shown in the UI)."""
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in
                                result.arrow_schema])


def partition_metadata(result: WindowResult, *, env: str,
                       previous_watermark: str | None) -> dict[str, Any]:
    """Everything a partition's materialization records, checks and resumes read it back."""
    return {
        md.CHECKPOINT: MetadataValue.json(result.checkpoint.to_contract()),
        md.PROFILE_REF: result.ref,
        md.RESOLVED_HASH: result.resolved_hash,
        md.PLAN_HASH: result.plan_hash,
        md.CONTENT_HASH: result.content_hash,
        md.ENV: env,
        md.WINDOW_START: result.window.to_dict()["start"],
        md.WINDOW_END: result.window.to_dict()["end"],
        md.RECORDS: result.records,
        md.PAGES: result.pages,
        md.BYTES: result.bytes,
        md.FILE_BYTES: result.file_bytes,
        md.REQUESTS: result.requests,
        md.RETRIES: result.retries,
        md.DROPPED_OUT_OF_WINDOW: result.dropped_out_of_window,
        md.DUPLICATES: result.duplicates,
        md.FINDINGS: MetadataValue.json(result.findings),
        md.WATERMARK: result.watermark or "",
        md.PREVIOUS_WATERMARK: previous_watermark or "",
        md.RESUMED_FROM_PAGE: result.resumed_from_page,
        md.DURATION_SECONDS: round(result.duration_seconds, 3),
        md.URI: result.uri,
        md.URI_DAGSTER: result.uri,
        md.ROW_COUNT: result.records,
        md.COLUMN_SCHEMA: column_schema(result),
        **recording_metadata(result),
    }


def _progress_observer(context: AssetExecutionContext, key: AssetKey, partition: str,
                       plan_hash: str) -> Callable[[RunEvent], None]:
    """Log each staged page at once (not when the step ends): it must outlive a crash.

    How a resume started (or that staging was lost) goes to the run's event log.
    """
    def observe(event: RunEvent) -> None:
        if not isinstance(event, PageProgress):
            log = context.log.warning if event.staging_lost else context.log.info
            log(f"{partition}: {event.message}")
            return
        context.log_event(AssetObservation(asset_key=key, partition=partition, metadata={
            md.OBSERVATION_KIND: md.PAGE_OBSERVATION,
            md.PAGE: event.page,
            md.RECORDS: event.records,
            md.BYTES: event.bytes,
            md.PLAN_HASH: plan_hash,
            md.CHECKPOINT: MetadataValue.json(event.checkpoint.to_contract()),
        }))
    return observe


def _previous_watermark(instance: DagsterInstance, key: AssetKey,
                        partitions_def: PartitionsDefinition, partition: str,
                        this_run: dict[str, str | None]) -> str | None:
    """The watermark the window before this one ended at, from this run or the instance."""
    prior_key = previous_partition_key(partitions_def, partition)
    if prior_key is None:
        return None
    if prior_key in this_run:
        return this_run[prior_key]
    prior = last_materialization(instance, key, prior_key)
    return (prior.metadata.get(md.WATERMARK) or None) if prior else None


def connector_event_iterator(context: AssetExecutionContext, *, resolved: ResolvedProfile,
                             key: AssetKey, partitions_def: PartitionsDefinition, env: str,
                             destination: str, staging_dir: str, secrets: SecretResolver,
                             env_policy: EnvPolicy, record_responses: bool | None = None,
                             ) -> Iterator[AssetObservation]:
    """Fetch every partition of the run in order, resuming any window left in flight.

    A finished window yields a `window_complete` observation so that a later re-execution
    does not mistake that window's last page observation for a resume point.
    """
    instance = context.instance
    storage = Storage.parse(destination)
    record = recording_enabled(resolved.spec, env, record_responses)
    network = NetworkOptions(env, secrets, env_policy,
                             recording=RecordTo(storage) if record else None)
    # Windows finished earlier in this run are not materialized until the step ends.
    watermarks: dict[str, str | None] = {}
    for partition in context.partition_keys:
        window = window_for_partition(partitions_def, partition)
        plan = build_plan(resolved, window)
        previous = last_materialization(instance, key, partition)
        previous_watermark = _previous_watermark(instance, key, partitions_def, partition,
                                                 watermarks)
        resume = resume_checkpoint(instance, key, partition, plan_hash=plan.plan_hash,
                                   after_storage_id=previous.storage_id if previous else None)
        try:
            result = fetch_window(
                resolved, window, plan,
                target=WindowTarget(storage, partition, resumable=True,
                                    staging_root=staging_dir),
                network=network, resume=resume,
                on_progress=_progress_observer(context, key, partition, plan.plan_hash))
        except ChartlyError as exc:
            raise Failure(
                description=f"{format_ref(resolved.ref)} partition {partition}: {exc.message}",
                metadata={"partition": partition, "code": exc.code,
                          "window_start": window.to_dict()["start"]},
                allow_retries=exc.platform_code in ("unavailable", "rate_limited"),
            ) from exc
        watermarks[partition] = result.watermark
        context.add_asset_metadata(
            {**partition_metadata(result, env=env, previous_watermark=previous_watermark),
             md.PREVIOUS_CHECKPOINT: MetadataValue.json(
                 previous.metadata.get(md.CHECKPOINT) if previous else None)},
            asset_key=key, partition_key=partition)
        context.log.info(f"{partition}: {result.records} records in {result.pages} pages "
                         f"-> {result.uri}")
        yield AssetObservation(asset_key=key, partition=partition, metadata={
            md.OBSERVATION_KIND: "window_complete", md.PLAN_HASH: result.plan_hash,
            md.CONTENT_HASH: result.content_hash, md.RECORDS: result.records})
