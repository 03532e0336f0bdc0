"""Recorded partitions in Dagster: metadata, and the `deterministic` check re-deriving them.

A dev partition is recorded next to its file; the check replays the recording through the
executor and compares content hashes ("re-derived"), a tampered byte fails it naming the
window and page, and an unrecorded partition is proven by integrity only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from dagster import (
    AssetCheckEvaluation,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    materialize,
)

from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.integration._compat import PARTITION_NAME_TAG
from chartly_dagster.integration.metadata import raw_value
from chartly_dagster.integration.resources import ChartlyResource, StorageConfig
from chartly_dagster.sandbox import Sandbox
from tests.support.shipped import ORDERS

PARTITION = "2026-01-06"


def _orders(defs: Definitions) -> list[Any]:
    assets = [a for a in defs.assets or [] if ORDERS in a.keys]
    checks = [c for c in defs.asset_checks or [] if all(
        k.asset_key == ORDERS for k in c.check_keys)]
    return [*assets, *checks]


def _run(defs: Definitions, instance: DagsterInstance, *, checks_only: bool = False) -> Any:
    selection = (AssetSelection.checks_for_assets(ORDERS) if checks_only
                 else AssetSelection.assets(ORDERS))
    return materialize(_orders(defs), instance=instance, selection=selection,
                       partition_key=None if checks_only else PARTITION,
                       tags={PARTITION_NAME_TAG: PARTITION} if checks_only else None,
                       resources=defs.resources, raise_on_error=False)


def _metadata(instance: DagsterInstance) -> PartitionMetadata:
    record = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[PARTITION]), limit=1).records[0]
    assert record.asset_materialization is not None
    return PartitionMetadata.extract(record.asset_materialization.metadata)


def _determinism(result: Any) -> tuple[bool, dict[str, Any]]:
    evaluation: AssetCheckEvaluation = next(
        e.event_specific_data for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == "deterministic"
        and e.event_specific_data.partition is None)  # the run-wide result, not a partition's
    return evaluation.passed, raw_value(evaluation.metadata["verdicts"])[PARTITION]


def test_dev_partition_is_recorded_and_re_derived(sandbox: Sandbox, sandbox_profiles: Path,
                                                  secrets_env: dict,
                                                  dagster_instance: DagsterInstance) -> None:
    defs = build_definitions(sandbox_profiles, env="dev")
    result = _run(defs, dagster_instance)
    assert result.success
    meta = _metadata(dagster_instance)
    assert meta.recording_uri and meta.uri and meta.response_hash and meta.checkpoint
    recording = Path(meta.recording_uri.removeprefix("file://"))
    assert recording.parent == Path(meta.uri.removeprefix("file://")).parent
    assert recording.name == f"_{PARTITION}.recording" and (recording / "recording.json").is_file()
    # The recording stays out of the way of reading the connector's folder as a dataset.
    assert pq.read_table(recording.parent).num_rows == meta.records
    assert meta.recording_bytes > 0 and meta.recorded_responses == meta.requests
    assert meta.response_hash.startswith("sha256:")
    assert meta.checkpoint["payload"]["response_hash"] == meta.response_hash
    passed, verdict = _determinism(result)
    assert passed and verdict["derivation"] == "re-derived"
    assert verdict["rederived_content_hash"] == meta.content_hash

    # One byte changed in a recorded body: the re-derivation fails, naming window and page.
    lines = (recording / "responses.jsonl").read_text().splitlines()
    second = json.loads(lines[1])
    body = recording / "bodies" / f"{second['body'].removeprefix('sha256:')}.gz"
    data = bytearray(body.read_bytes())
    data[len(data) // 2] ^= 0x01
    body.write_bytes(bytes(data))
    requests = sandbox.request_count()
    passed, verdict = _determinism(_run(defs, dagster_instance, checks_only=True))
    assert not passed and verdict["derivation"] == "re-derived"
    (finding,) = verdict["findings"]
    assert finding["code"] == "rederivation_failed" and finding["error"] == "recording_corrupt"
    assert "window 2026-01-06T00:00:00Z--2026-01-07T00:00:00Z" in finding["message"]
    assert f"page {second['page']}" in finding["message"]
    assert sandbox.request_count() == requests  # the check never reached the upstream


def test_unrecorded_partition_is_integrity_only(sandbox: Sandbox, sandbox_profiles: Path,
                                                secrets_env: dict,
                                                dagster_instance: DagsterInstance) -> None:
    defs = build_definitions(sandbox_profiles, resource=ChartlyResource(
        env="dev", storage=StorageConfig(record_responses=False)))
    result = _run(defs, dagster_instance)
    assert result.success
    meta = _metadata(dagster_instance)
    assert meta.response_hash is None and meta.recording_uri is None and meta.checkpoint
    assert "response_hash" not in meta.checkpoint["payload"]
    passed, verdict = _determinism(result)
    assert passed and verdict["derivation"] == "integrity only"
