"""Where a partition stands, from the Dagster instance and the run.

A partition's last materialization holds its final checkpoint (read per partition, because
`get_latest_materialization_event` ignores partitions). The progress of a window in flight
is not here: it is kept in the window's staging manifest (runtime/executor.py), which a
re-execution reads back, scoped to the run's lineage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, DagsterInstance

from . import metadata as md


@dataclass(frozen=True)
class PartitionRecord:
    """The newest materialization of one partition: its storage id and plain metadata."""

    storage_id: int
    metadata: dict[str, Any]


def last_materialization(instance: DagsterInstance, key: AssetKey,
                         partition: str) -> PartitionRecord | None:
    """This partition's newest materialization, or None if it was never materialized."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records:
        return None
    event = records[0].asset_materialization
    return PartitionRecord(records[0].storage_id, md.plain(dict(event.metadata) if event else {}))


def run_lineage(context: AssetExecutionContext) -> str:
    """The id shared by a run and all its re-executions (its root run's id).

    A window a failed run finished is reused only by a re-execution of that run: a fresh
    run of the same partitions means "fetch again" (the upstream may have late data).
    """
    run = context.run
    return run.root_run_id or run.run_id
