"""Typed assets: one per connector asset, the API's fields as typed columns, drift checked.

A typed asset shares its connector asset's partitions and depends on it, so in a run the
connector's blocking checks gate it: bad raw data never gets typed. Each partition reads
that window's envelope file and writes one typed Parquet file into a Hive-style folder
(`window=<start>`), so all partitions read as one dataset.
"""

# No `from __future__ import annotations`: Dagster inspects the decorated functions' real
# annotations to find the context type and resources.

import warnings
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    Failure,
    MaterializeResult,
    PartitionsDefinition,
    TableColumn,
    TableSchema,
    asset,
    asset_check,
)

from ..core.catalog import ResolvedProfile
from ..core.columns import JOIN_COLUMNS, schema_drift
from ..core.windows import Window
from ..runtime.envelope import ENVELOPE_ARROW_SCHEMA
from ..runtime.typed import (
    TypedColumn,
    TypedWindow,
    declared_columns,
    partition_path,
    type_window,
    typed_schema,
)
from . import metadata as md
from .checkpoints import last_materialization
from .checks import CheckedPartition, _result, judge_partitions
from .metadata import PartitionMetadata, TypedPartitionMetadata
from .partitions import previous_partition_key, window_for_partition
from .resources import ChartlyResource

DRIFT_CHECK = "schema_drift"
_JOIN_DESCRIPTIONS = {
    "event_id": "Envelope event id (joins back to the connector asset).",
    "record_id": "The record's id in the upstream.",
    "record_type": "The profile's record type.",
    "occurred_at": "When the record occurred (UTC).",
    "window_start": "Start of the partition window (inclusive, UTC).",
    "window_end": "End of the partition window (exclusive, UTC).",
}


def envelope_column_schema() -> TableSchema:
    """The connector asset's envelope columns, known before any run."""
    return TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in
                                ENVELOPE_ARROW_SCHEMA])


def _table_schema(columns: list[TypedColumn]) -> TableSchema:
    schema = typed_schema(columns)
    descriptions = {**_JOIN_DESCRIPTIONS, **{c.name: c.description for c in columns}}
    return TableSchema(columns=[TableColumn(f.name, str(f.type),
                                            description=descriptions.get(f.name) or None)
                                for f in schema])


def declared_column_schema(resolved: ResolvedProfile) -> TableSchema:
    """Join columns plus the declared columns with their descriptions (join only: inferred)."""
    specs = resolved.spec.records.columns
    return _table_schema(declared_columns(specs) if specs else [])


@dataclass(frozen=True)
class TypedAssetSpecs:
    """What build_typed_layer needs to know about one connector asset."""

    resolved: ResolvedProfile
    connector: AssetSpec
    typed: AssetSpec


def typed_relative(key: AssetKey, window: Window) -> str:
    """`typed/<key path>/window=<start>/part-0.parquet` under the storage root."""
    return f"typed/{'/'.join(key.path)}/{partition_path(window.to_dict()['start'])}/part-0.parquet"


def _columns_source(resolved: ResolvedProfile) -> str:
    return "declared" if resolved.spec.records.columns else "inferred"


def _typed_metadata(typed: TypedWindow, window: Window, source: str) -> TypedPartitionMetadata:
    bounds = window.to_dict()
    return TypedPartitionMetadata(
        window_start=bounds["start"], window_end=bounds["end"], uri=typed.uri,
        records=typed.rows, columns=source, conversion_errors=typed.errors,
        observed=typed.observed,
        column_report={name: report.to_dict() for name, report in sorted(typed.report.items())},
        column_schema=_table_schema(list(typed.columns)))


def build_typed_asset(specs: TypedAssetSpecs, backfill_policy: BackfillPolicy
                      ) -> AssetsDefinition:
    """The typed asset of one connector asset: same partitions, one typed file per window."""
    resolved, source_key, spec = specs.resolved, specs.connector.key, specs.typed
    partitions_def = spec.partitions_def
    assert partitions_def is not None
    declared = (declared_columns(resolved.spec.records.columns)
                if resolved.spec.records.columns else None)

    with warnings.catch_warnings():  # backfill_policy is a beta parameter, used on purpose
        warnings.simplefilter("ignore", BetaWarning)

        @asset(key=spec.key, deps=[source_key], partitions_def=partitions_def,
               group_name=spec.group_name, backfill_policy=backfill_policy,
               kinds=set(spec.kinds), tags=dict(spec.tags), owners=list(spec.owners),
               description=spec.description, metadata=dict(spec.metadata))
        def _typed(context: AssetExecutionContext, chartly: ChartlyResource) -> MaterializeResult:
            destination = chartly.storage.destination(context.instance)
            for partition in context.partition_keys:
                upstream = last_materialization(context.instance, source_key, partition)
                uri = PartitionMetadata.extract(upstream.metadata).uri if upstream else None
                if not uri:
                    raise Failure(description=(
                        f"{source_key.to_user_string()} partition {partition} has no "
                        f"materialized file to type; materialize it first"))
                window = window_for_partition(partitions_def, partition)
                try:
                    typed = type_window(uri, f"{destination}/{typed_relative(spec.key, window)}",
                                        declared)
                except (OSError, ValueError) as exc:
                    raise Failure(description=(
                        f"{spec.key.to_user_string()} partition {partition}: could not type "
                        f"{uri}: {exc}")) from exc
                context.add_asset_metadata(
                    _typed_metadata(typed, window, _columns_source(resolved)).to_metadata(),
                    partition_key=partition)
                context.log.info(f"{partition}: {typed.rows} typed rows, "
                                 f"{len(typed.columns)} columns -> {typed.uri}")
            return MaterializeResult()

    return _typed


def _declared_verdict(partition: CheckedPartition[TypedPartitionMetadata]) -> dict[str, Any]:
    report = partition.metadata.column_report or {}
    problems = [{"column": name, "errors": col["errors"], "samples": col["samples"]}
                for name, col in sorted(report.items()) if col["errors"]]
    return {"ok": not problems, "rows": partition.metadata.records, "findings": problems}


def _inferred_verdict(context: AssetCheckExecutionContext, key: AssetKey,
                      partitions_def: PartitionsDefinition,
                      partition: CheckedPartition[TypedPartitionMetadata]) -> dict[str, Any]:
    current = partition.metadata.observed or {}
    prior_key = previous_partition_key(partitions_def, partition.key)
    prior = last_materialization(context.instance, key, prior_key) if prior_key else None
    if prior is None:
        return {"ok": True, "note": "no previous partition to compare with"}
    drift = schema_drift(TypedPartitionMetadata.extract(prior.metadata).observed or {}, current)
    return {"ok": not any(drift.values()), "previous_partition": prior_key, **drift}


def build_drift_check(resolved: ResolvedProfile, key: AssetKey,
                      partitions_def: PartitionsDefinition) -> AssetChecksDefinition:
    """`schema_drift`: declared columns must convert (ERROR, blocking); inferred ones WARN
    when a partition's fields differ from the previous partition's."""
    declared = bool(resolved.spec.records.columns)
    description = (
        "Every declared column is present and converts to its declared type in every row; "
        "failures name the column with row samples." if declared else
        "A partition's inferred fields and types match the previous partition's; added, "
        "removed and retyped fields are named.")

    @asset_check(asset=key, name=DRIFT_CHECK, blocking=declared, description=description)
    def _schema_drift(context: AssetCheckExecutionContext) -> AssetCheckResult:
        severity = AssetCheckSeverity.ERROR if declared else AssetCheckSeverity.WARN
        verdicts = judge_partitions(
            context, key, partitions_def, DRIFT_CHECK,
            lambda partition, _window: _declared_verdict(partition) if declared
            else _inferred_verdict(context, key, partitions_def, partition),
            TypedPartitionMetadata, severity=severity, blocking=declared)
        return _result(DRIFT_CHECK, verdicts, {md.DEF_COLUMNS_SOURCE: _columns_source(resolved)},
                       severity=severity)

    return _schema_drift


def typed_asset_spec(connector: AssetSpec, key: AssetKey, resolved: ResolvedProfile
                     ) -> AssetSpec:
    """The typed asset's spec, derived from its connector asset's (the translator's hook)."""
    how = "declared in the profile" if resolved.spec.records.columns else (
        "inferred from each window's records (sorted by name)")
    return AssetSpec(
        key=key, group_name=connector.group_name, owners=list(connector.owners),
        description=(f"Typed columns of {connector.key.to_user_string()}: the records' fields "
                     f"{how}, plus {', '.join(JOIN_COLUMNS)} to join back to the envelope."),
        kinds={"chartly", "parquet"}, tags=dict(connector.tags),
        metadata={md.DEF_COLUMN_SCHEMA: declared_column_schema(resolved),
                  md.DEF_COLUMNS_SOURCE: _columns_source(resolved),
                  md.DEF_PROFILE_REF: connector.metadata.get(md.DEF_PROFILE_REF, "")},
        partitions_def=connector.partitions_def)


def build_typed_layer(specs: TypedAssetSpecs, backfill_policy: BackfillPolicy
                      ) -> tuple[AssetsDefinition, AssetChecksDefinition]:
    """The typed asset and its drift check, for `build_definitions`."""
    assert specs.typed.partitions_def is not None
    return (build_typed_asset(specs, backfill_policy),
            build_drift_check(specs.resolved, specs.typed.key, specs.typed.partitions_def))
