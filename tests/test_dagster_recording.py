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
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    materialize,
)
from dagster._core.storage.tags import PARTITION_NAME_TAG

from chartly_dagster.integration import build_definitions
from chartly_dagster.integration import metadata as md
from chartly_dagster.integration.resources import ChartlyStorageResource
from chartly_dagster.sandbox import Sandbox

ORDERS = AssetKey(["tenant-demo", "proj-sales", "orders"])
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


def _metadata(instance: DagsterInstance) -> dict[str, Any]:
    record = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[PARTITION]), limit=1).records[0]
    assert record.asset_materialization is not None
    return {k: md.raw_value(v) for k, v in record.asset_materialization.metadata.items()}


def _determinism(result: Any) -> tuple[bool, dict[str, Any]]:
    evaluation: AssetCheckEvaluation = next(
        e.event_specific_data for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == "deterministic")
    return evaluation.passed, md.raw_value(evaluation.metadata["verdicts"])[PARTITION]


def test_dev_partition_is_recorded_and_re_derived(sandbox: Sandbox, sandbox_profiles: Path,
                                                  secrets_env: dict,
                                                  dagster_instance: DagsterInstance) -> None:
    defs = build_definitions(sandbox_profiles, env="dev")
    result = _run(defs, dagster_instance)
    assert result.success
    meta = _metadata(dagster_instance)
    recording = Path(meta[md.RECORDING_URI].removeprefix("file://"))
    assert recording.parent == Path(meta[md.URI].removeprefix("file://")).parent
    assert recording.name == f"_{PARTITION}.recording" and (recording / "recording.json").is_file()
    # The recording stays out of the way of reading the connector's folder as a dataset.
    assert pq.read_table(recording.parent).num_rows == meta[md.RECORDS]
    assert meta[md.RECORDING_BYTES] > 0 and meta[md.RECORDED_RESPONSES] == meta[md.REQUESTS]
    assert meta[md.RESPONSE_HASH].startswith("sha256:")
    assert meta[md.CHECKPOINT]["payload"]["response_hash"] == meta[md.RESPONSE_HASH]
    passed, verdict = _determinism(result)
    assert passed and verdict["derivation"] == "re-derived"
    assert verdict["rederived_content_hash"] == meta[md.CONTENT_HASH]

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
    defs = build_definitions(sandbox_profiles, env="dev",
                             storage=ChartlyStorageResource(record_responses=False))
    result = _run(defs, dagster_instance)
    assert result.success
    meta = _metadata(dagster_instance)
    assert md.RESPONSE_HASH not in meta and md.RECORDING_URI not in meta
    assert "response_hash" not in meta[md.CHECKPOINT]["payload"]
    passed, verdict = _determinism(result)
    assert passed and verdict["derivation"] == "integrity only"
