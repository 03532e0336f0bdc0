"""An example downstream asset: a daily summary of a project's ingested partitions, in pandas.

It exists to show the gate: it reads the typed assets (typed columns, never `raw`), which
only exist for what the blocking checks let through, so a failing `envelope_valid`,
`deterministic` or declared `schema_drift` check on any upstream visibly skips it.
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
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from . import metadata as md
from .checkpoints import last_materialization
from .partitions import window_for_partition
from .resources import ChartlyStorageResource

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


def build_summary_asset(key: AssetKey, upstream: Sequence[AssetKey],
                        partitions_def: PartitionsDefinition, group_name: str,
                        backfill_policy: BackfillPolicy) -> AssetsDefinition:
    """A summary partitioned like its upstreams, so one run can carry both and the checks.

    It shares their backfill policy: a run's ranges are bounded by the strictest policy.
    """

    with warnings.catch_warnings():  # backfill_policy is a beta parameter, used on purpose
        warnings.simplefilter("ignore", BetaWarning)
        summary = _summary_asset(key, upstream, partitions_def, group_name, backfill_policy)
    return summary


def _summary_asset(key: AssetKey, upstream: Sequence[AssetKey],
                   partitions_def: PartitionsDefinition, group_name: str,
                   backfill_policy: BackfillPolicy) -> AssetsDefinition:
    @asset(key=key, deps=list(upstream), partitions_def=partitions_def, group_name=group_name,
           backfill_policy=backfill_policy,
           kinds={"pandas", "parquet"},
           description="Records per upstream and record type for each window (example "
                       "downstream of the typed assets, gated by the checks).")
    def _daily_summary(context: AssetExecutionContext,
                       chartly_storage: ChartlyStorageResource) -> MaterializeResult:
        destination = chartly_storage.destination(context.instance)
        for partition in context.partition_keys:
            frames = {}
            for up in upstream:
                record = last_materialization(context.instance, up, partition)
                uri = record.metadata.get(md.URI) if record else None
                frames[up.to_user_string()] = (
                    chartly_storage.read_table(uri).select(
                        ["record_type", "event_id", "occurred_at"]).to_pandas()
                    if uri else pd.DataFrame(columns=["record_type", "event_id", "occurred_at"]))
            table = summarize(frames)
            uri = f"{destination}/{'/'.join(key.path)}/{partition}.parquet"
            chartly_storage.write_table(pa.Table.from_pandas(table, preserve_index=False), uri)
            window = window_for_partition(partitions_def, partition).to_dict()
            context.add_asset_metadata({
                md.ROW_COUNT: len(table), md.URI: uri,
                md.WINDOW_START: window["start"], md.WINDOW_END: window["end"],
                "records": int(table["records"].sum()),
                "summary": MetadataValue.md(_markdown(table)),
            }, partition_key=partition)
        return MaterializeResult()

    return _daily_summary

