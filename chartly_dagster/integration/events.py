"""Turn one profile's partitions into Dagster events while the windows are fetched.

Like dagster-sling's event iterator: the run reports as the work progresses. Each page
that is durably staged becomes an `AssetObservation` (the resume point if the run dies),
and each finished window gets its own per-partition metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    TableColumn,
    TableSchema,
)

from ..core.catalog import ResolvedProfile, check_run_scope
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
from .metadata import PartitionMetadata
from .partitions import previous_partition_key, window_for_partition
from .recordings import recording_fields


def column_schema(result: WindowResult) -> TableSchema:
    """The written file's Arrow schema as Dagster's column schema (shown in the UI)."""
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in
                                result.arrow_schema])


def partition_metadata(result: WindowResult, *, env: str, previous: PartitionMetadata | None,
                       previous_watermark: str | None) -> PartitionMetadata:
    """Everything a partition's materialization records; checks and resumes read it back."""
    window = result.window.to_dict()
    position = result.checkpoint.position  # the paginator's state: what the upstream served
    return PartitionMetadata(
        profile_ref=result.ref, resolved_hash=result.resolved_hash,
        plan_hash=result.plan_hash, content_hash=result.content_hash, env=env,
        window_start=window["start"], window_end=window["end"], uri=result.uri,
        records=result.records, pages=result.pages, bytes=result.bytes,
        file_bytes=result.file_bytes, requests=result.requests, retries=result.retries,
        dropped_out_of_window=result.dropped_out_of_window, duplicates=result.duplicates,
        resumed_from_page=result.resumed_from_page,
        duration_seconds=round(result.duration_seconds, 3),
        watermark=result.watermark, previous_watermark=previous_watermark,
        checkpoint=result.checkpoint.to_contract(),
        previous_checkpoint=previous.checkpoint if previous else None,
        findings=tuple(result.findings), outcome=result.outcome,
        ended_by=result.ended_by or None, capped_by=result.capped_by,
        declared_total=position.get("total"),
        records_served=position.get("fetched"), column_schema=column_schema(result),
        **recording_fields(result))


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
    return PartitionMetadata.extract(prior.metadata).watermark if prior else None


def profile_of(context: AssetExecutionContext) -> ResolvedProfile:
    """The resolved profile `@chartly_assets` left on the asset's spec."""
    spec_metadata = next(iter(context.assets_def.metadata_by_key.values()))
    resolved = spec_metadata.get(md.META_KEY_PROFILE)
    if not isinstance(resolved, ResolvedProfile):
        raise Failure(description=(
            f"asset {context.assets_def.key.to_user_string()} was not built with "
            f"@chartly_assets: no connector profile on its spec"), allow_retries=False)
    return resolved


def connector_events(context: AssetExecutionContext, *, env: str, destination: str,
                     staging_dir: str, secrets: SecretResolver, env_policy: EnvPolicy,
                     record_responses: bool | None = None,
                     ) -> Iterator[AssetObservation | MaterializeResult]:
    """Fetch every partition of the run in order, resuming any window left in flight.

    Each finished window gets its own per-partition metadata and a `window_complete`
    observation, so that a later re-execution does not mistake that window's last page
    observation for a resume point; the final `MaterializeResult` carries nothing
    partition-specific, because Dagster copies it onto every partition of a range run.
    """
    resolved = profile_of(context)
    key = context.assets_def.key
    partitions_def = context.assets_def.partitions_def
    if partitions_def is None:
        raise Failure(description=f"asset {key.to_user_string()} has no partitions",
                      allow_retries=False)
    try:  # the resource's env must be one the profile allows (a profile is its own scope)
        check_run_scope(resolved, env=env, tenant=resolved.ref.tenant,
                        project=resolved.ref.project)
    except ChartlyError as exc:
        raise Failure(description=exc.message, allow_retries=False) from exc
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
        meta = partition_metadata(
            result, env=env, previous_watermark=previous_watermark,
            previous=PartitionMetadata.extract(previous.metadata) if previous else None)
        context.add_asset_metadata(meta.to_metadata(), asset_key=key, partition_key=partition)
        context.log.info(f"{partition}: {result.records} records in {result.pages} pages "
                         f"-> {result.uri}")
        yield AssetObservation(asset_key=key, partition=partition, metadata={
            md.OBSERVATION_KIND: md.WINDOW_COMPLETE_OBSERVATION, md.PLAN_HASH: result.plan_hash,
            md.CONTENT_HASH: result.content_hash, md.RECORDS: result.records})
    yield MaterializeResult(asset_key=key)
