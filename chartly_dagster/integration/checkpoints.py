"""Read a partition's checkpoint state back from the Dagster instance.

The instance is the checkpoint store: a partition's last materialization holds its final
checkpoint, and the page observations logged after it hold the progress of a window that
was in flight when a run failed. Everything is looked up per partition, because
`get_latest_materialization_event` ignores partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from ..runtime.executor import Checkpoint
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


def resume_checkpoint(instance: DagsterInstance, key: AssetKey, partition: str, *,
                      plan_hash: str, after_storage_id: int | None) -> Checkpoint | None:
    """The last page checkpoint of an unfinished window of the same plan, logged after the
    last success.

    Observations of another plan (the profile changed in between) are ignored: resuming
    someone else's cursor would mix two plans in one file. So is a checkpoint this version
    cannot read (written by an older one): the window then starts over.
    """
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition],
                           after_storage_id=after_storage_id), limit=1).records
    if not records or records[0].asset_observation is None:
        return None
    meta = md.plain(dict(records[0].asset_observation.metadata))
    if meta.get(md.OBSERVATION_KIND) != md.PAGE_OBSERVATION or meta.get(md.PLAN_HASH) != plan_hash:
        return None
    try:
        return Checkpoint.from_contract(meta[md.CHECKPOINT])
    except (KeyError, TypeError, ValueError):
        return None
