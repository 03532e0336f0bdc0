"""An example downstream asset: a daily summary of a project's ingested partitions, in pandas.

It exists to show the gate: it reads the typed assets (typed columns, never `raw`), which
only exist for what the blocking checks let through, so a failing `envelope_valid`,
`deterministic`, `complete` or declared `schema_drift` check on any upstream visibly skips it. Pass
`daily_summaries` as `build_definitions(..., downstream=daily_summaries)` and each daily
project gets one, run in the project's job next to its connectors and typed assets.
"""

# No `from __future__ import annotations`: Dagster inspects the decorated functions' real
# annotations to find the context type and resources.

import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
    asset,
)

from chartly_dagster.integration import ChartlyResource, ProjectAssets, TypedPartitionMetadata

SUMMARY_NAME = "daily_summary"
SUMMARY_COLUMNS = ["asset", "record_type", "records", "distinct_events", "first_occurred_at",
                   "last_occurred_at"]
def summarize(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per upstream asset and record type: counts and the occurrence-time span."""
    rows: list[dict[str, Any]] = []
    for name, frame in sorted(frames.items()):
        if frame.empty:
            rows.append({"asset": name, "record_type": "", "records": 0, "distinct_events": 0,
                         "first_occurred_at": pd.NaT, "last_occurred_at": pd.NaT})
            continue
        grouped = frame.groupby("record_type").agg(
            records=("event_id", "size"), distinct_events=("event_id", "nunique"),
            first_occurred_at=("occurred_at", "min"), last_occurred_at=("occurred_at", "max"))
        for record_type, values in grouped.iterrows():
            rows.append({"asset": name, "record_type": record_type, **values.to_dict()})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n"
                            for row in frame.itertuples(index=False))


def daily_summaries(project: ProjectAssets) -> list[AssetsDefinition]:
    """A summary of a project's daily typed assets (none for other cadences, or without
    typed assets: `build_definitions(..., typed=False)`)."""
    if project.cadence != "daily" or not project.downstream:
        return []
    key = AssetKey([*project.keys[0].path[:-1], SUMMARY_NAME])
    return [build_summary_asset(key, project.downstream, project.partitions_def,
                                project.group_name)]


def _upstream_uri(instance: DagsterInstance, key: AssetKey, partition: str) -> str | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    return TypedPartitionMetadata.extract(records[0].asset_materialization.metadata).uri


def build_summary_asset(key: AssetKey, upstream: Sequence[AssetKey],
                        partitions_def: PartitionsDefinition, group_name: str
                        ) -> AssetsDefinition:
    """A summary partitioned like its upstreams, so one run can carry both and the checks.

    Like the connector assets, a range of windows is one run.
    """
    assert isinstance(partitions_def, TimeWindowPartitionsDefinition)
    with warnings.catch_warnings():  # backfill_policy is a beta parameter, used on purpose
        warnings.simplefilter("ignore", BetaWarning)

        @asset(key=key, deps=list(upstream), partitions_def=partitions_def,
               group_name=group_name, backfill_policy=BackfillPolicy.single_run(),
               kinds={"pandas", "parquet"},
               description="Records per upstream and record type for each window (example "
                           "downstream of the typed assets, gated by the checks).")
        def _daily_summary(context: AssetExecutionContext,
                           chartly: ChartlyResource) -> MaterializeResult:
            destination = chartly.storage.destination(context.instance)
            for partition in context.partition_keys:
                frames = {}
                for up in upstream:
                    uri = _upstream_uri(context.instance, up, partition)
                    frames[up.to_user_string()] = (
                        chartly.storage.read_table(uri).select(
                            ["record_type", "event_id", "occurred_at"]).to_pandas()
                        if uri else pd.DataFrame(
                            columns=["record_type", "event_id", "occurred_at"]))
                table = summarize(frames)
                uri = f"{destination}/{'/'.join(key.path)}/{partition}.parquet"
                chartly.storage.write_table(pa.Table.from_pandas(table, preserve_index=False),
                                            uri)
                window = partitions_def.time_window_for_partition_key(partition)
                context.add_asset_metadata({
                    "dagster/row_count": len(table), "dagster/uri": uri,
                    "window_start": window.start.isoformat(),
                    "window_end": window.end.isoformat(),
                    "records": int(table["records"].sum()),
                    "summary": MetadataValue.md(_markdown(table)),
                }, partition_key=partition)
            return MaterializeResult()

    return _daily_summary
