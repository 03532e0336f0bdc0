"""Materialize connector assets through Dagster against the sandbox, and read results back.

Everything runs through Dagster (materialize, jobs, re-execution) with a real SQLite
instance; asset bodies are never called directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    JobDefinition,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
    materialize,
)

from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.integration._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from chartly_dagster.integration.metadata import OBSERVATION_KIND, PAGE, raw_value
from chartly_dagster.sandbox import Fault, Sandbox
from examples.summary import daily_summaries
from tests.support.shipped import ORDERS, ORDERS_TYPED, SALES_JOB, SALES_SUMMARY


def _defs(profiles: Path) -> Definitions:
    return build_definitions(profiles, env="dev", downstream=daily_summaries)


def orders_job(profiles_dir: str) -> JobDefinition:
    """Module-level, so a re-execution can rebuild the job from its arguments."""
    return _defs(Path(profiles_dir)).resolve_job_def("tenant_demo__proj_sales__orders_job")


def _stored(instance: DagsterInstance, key: AssetKey, partition: str) -> dict[str, Any]:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    assert records, f"{key.to_user_string()} {partition} was not materialized"
    mat = records[0].asset_materialization
    assert mat is not None
    return dict(mat.metadata)


def _latest(instance: DagsterInstance, key: AssetKey, partition: str) -> PartitionMetadata:
    return PartitionMetadata.extract(_stored(instance, key, partition))


def _materialize(defs: Definitions, instance: DagsterInstance, selection: Any,
                 partition: str, raise_on_error: bool = True, checks_only: bool = False) -> Any:
    """Run `selection` for one partition (checks alone get the partition as a run tag:
    an unpartitioned check-only run has no partitions definition to key it by)."""
    # One run, one partitions definition: pass the sales project's (daily) assets only.
    def in_sales(key: AssetKey) -> bool:
        return key.path[:2] == ["tenant-demo", "proj-sales"]

    assets = [a for a in defs.assets or [] if all(in_sales(k) for k in a.keys)]
    checks = [c for c in defs.asset_checks or [] if all(
        in_sales(k.asset_key) for k in c.check_keys)]
    return materialize([*assets, *checks], instance=instance, selection=selection,
                       partition_key=None if checks_only else partition,
                       tags={PARTITION_NAME_TAG: partition} if checks_only else None,
                       resources=defs.resources, raise_on_error=raise_on_error)


def _event_ids(uri: str) -> list[str]:
    return pq.read_table(uri.removeprefix("file://"), columns=["event_id"]).column(
        "event_id").to_pylist()


def test_single_partition_metadata_and_checkpoint(sandbox: Sandbox, sandbox_profiles: Path,
                                                  secrets_env: dict, dagster_instance:
                                                  DagsterInstance) -> None:
    defs = _defs(sandbox_profiles)
    result = _materialize(defs, dagster_instance, AssetSelection.assets(ORDERS)
                          | AssetSelection.checks_for_assets(ORDERS), "2026-01-05")
    assert result.success
    meta = _latest(dagster_instance, ORDERS, "2026-01-05")
    truth = sandbox.ground_truth("/v2/orders", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")
    stored = _stored(dagster_instance, ORDERS, "2026-01-05")
    assert meta.records == raw_value(stored[PartitionMetadata.ROW_COUNT_KEY]) == len(truth)
    assert meta.uri == raw_value(stored[PartitionMetadata.URI_KEY])
    assert meta.profile_ref == "tenant-demo/proj-sales::connector/orders@2.1.0#dev"
    assert meta.resolved_hash and meta.resolved_hash.startswith("sha256:")
    assert meta.plan_hash and meta.plan_hash.startswith("sha256:")
    assert meta.window_start == "2026-01-05T00:00:00Z"
    assert meta.pages == 2 and meta.retries == 0
    checkpoint = meta.checkpoint
    assert checkpoint is not None
    assert checkpoint["scope"] == {"tenant": "tenant-demo", "project": "proj-sales",
                                   "connector": "orders", "partition": "2026-01-05"}
    assert {"checkpoint_type", "payload", "updated_at"} <= set(checkpoint)
    schema = meta.column_schema
    assert schema is not None
    assert [c.name for c in schema.columns][:2] == ["envelope_version", "event_id"]
    assert meta.uri and len(set(_event_ids(meta.uri))) == len(truth)
    evaluations = [e for e in result.all_events
                   if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    assert {e.event_specific_data.check_name: e.event_specific_data.passed
            for e in evaluations} == {"envelope_valid": True, "deterministic": True,
                                      "complete": True}


def test_same_partition_twice_same_content_hash(sandbox: Sandbox, sandbox_profiles: Path,
                                                secrets_env: dict,
                                                dagster_instance: DagsterInstance) -> None:
    defs = _defs(sandbox_profiles)
    hashes = []
    for _ in range(2):
        assert _materialize(defs, dagster_instance, AssetSelection.assets(ORDERS),
                            "2026-01-07").success
        hashes.append(_latest(dagster_instance, ORDERS, "2026-01-07").content_hash)
    assert hashes[0] == hashes[1]


def test_partition_range_in_one_run_with_per_partition_metadata(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    defs = _defs(sandbox_profiles)
    job = defs.resolve_job_def(SALES_JOB)
    result = job.execute_in_process(instance=dagster_instance, tags={
        ASSET_PARTITION_RANGE_START_TAG: "2026-01-01",
        ASSET_PARTITION_RANGE_END_TAG: "2026-01-03"})
    assert result.success
    runs = dagster_instance.get_run_records()
    assert len(runs) == 1
    metas = {pk: _latest(dagster_instance, ORDERS, pk)
             for pk in ("2026-01-01", "2026-01-02", "2026-01-03")}
    assert len({m.content_hash for m in metas.values()}) == 3
    assert len({m.plan_hash for m in metas.values()}) == 3
    for pk, meta in metas.items():
        assert meta.checkpoint is not None and meta.checkpoint["scope"]["partition"] == pk
        assert meta.uri and meta.uri.endswith(f"/orders/{pk}.parquet")
    # The second window continues from the first one's watermark, read within the run.
    assert metas["2026-01-02"].previous_watermark == metas["2026-01-01"].watermark
    summary = _stored(dagster_instance, SALES_SUMMARY, "2026-01-02")
    assert raw_value(summary["records"]) == sum(
        _latest(dagster_instance, AssetKey(["tenant-demo", "proj-sales", name]),
                "2026-01-02").records
        for name in ("orders", "invoices", "sales-events", "sales-feed"))


def test_failed_window_resumes_after_last_page_on_reexecution(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    # Page 1 of the window is staged and observed, then page 2 fails with an auth error
    # (never retried); the re-execution must fetch page 2 only.
    sandbox.faults.add(Fault(kind="status", status=401, endpoint="/v2/orders",
                             on_request=2, times=1))
    recon = build_reconstructable_job(__name__, "orders_job",
                                      reconstructable_args=(str(sandbox_profiles),))
    tags = {"dagster/partition": "2026-01-10"}
    with execute_job(recon, instance=dagster_instance, tags=tags) as first:
        assert not first.success
        first_id = first.run_id
    observations = dagster_instance.fetch_observations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=["2026-01-10"]), limit=10).records
    # The failed window ended within its progress interval, so its one observation is
    # where it stopped: page 1, where the re-execution resumes.
    (stopped,) = [r.asset_observation.metadata for r in observations if r.asset_observation]
    assert raw_value(stopped[OBSERVATION_KIND]) == "page" and raw_value(stopped[PAGE]) == 1
    with execute_job(recon, instance=dagster_instance, tags=tags, reexecution_options=(
            ReexecutionOptions.from_failure(first_id, dagster_instance))) as second:
        assert second.success
    meta = _latest(dagster_instance, ORDERS, "2026-01-10")
    assert meta.resumed_from_page == 1
    offsets = [query.get("offset") for _, path, query in sandbox.request_log
               if path == "/v2/orders"]
    # offset 0 once (never refetched), the failed page twice (401, then the resume).
    assert offsets == ["0", "1000", "1000"], offsets
    truth = sandbox.ground_truth("/v2/orders", "2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z")
    assert meta.uri is not None
    written = _event_ids(meta.uri)
    assert len(written) == len(set(written)) == len(truth) == meta.records


def test_corrupted_record_fails_envelope_check_and_skips_summary(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    defs = _defs(sandbox_profiles)
    job = defs.resolve_job_def(SALES_JOB)
    assert job.execute_in_process(instance=dagster_instance,
                                  partition_key="2026-01-04").success
    uri = _latest(dagster_instance, ORDERS, "2026-01-04").uri
    assert uri is not None
    path = uri.removeprefix("file://")
    table = pq.read_table(path)
    raw = table.column("raw").to_pylist()
    raw[3] = raw[3].replace("{", '{"tampered":true,', 1)
    pq.write_table(table.set_column(table.schema.get_field_index("raw"),
                                    table.schema.field("raw"), pa.array(raw, pa.string())),
                   path)
    selection = AssetSelection.checks_for_assets(ORDERS) | AssetSelection.assets(
        ORDERS_TYPED, SALES_SUMMARY)
    result = _materialize(defs, dagster_instance, selection, "2026-01-04", raise_on_error=False)
    assert not result.success
    evaluation = next(e.event_specific_data for e in result.all_events
                      if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                      and e.event_specific_data.partition is None  # the whole run's verdict
                      and e.event_specific_data.check_name == "envelope_valid")
    assert not evaluation.passed
    meta = {k: raw_value(v) for k, v in evaluation.metadata.items()}
    assert meta["failing_partitions"] == ["2026-01-04"]
    finding = meta["verdicts"]["2026-01-04"]["findings"][0]
    assert finding["code"] == "raw_sha256_mismatch" and finding["rows"] == [3]
    summary_runs = [e for e in result.all_events
                    if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
                    and e.asset_key == SALES_SUMMARY and e.run_id == result.run_id]
    assert not summary_runs
    assert pc.sum(pc.equal(pq.read_table(path).column("record_id"),
                           table.column("record_id"))).as_py() == table.num_rows


def test_changed_profile_fails_determinism(sandbox: Sandbox, sandbox_profiles: Path,
                                           secrets_env: dict,
                                           dagster_instance: DagsterInstance) -> None:
    assert _materialize(_defs(sandbox_profiles), dagster_instance,
                        AssetSelection.assets(ORDERS), "2026-01-06").success
    path = sandbox_profiles / "sales" / "orders.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("pageSize: 1000", "pageSize: 500"),
                    encoding="utf-8")
    result = _materialize(_defs(sandbox_profiles), dagster_instance,
                          AssetSelection.checks_for_assets(ORDERS), "2026-01-06",
                          raise_on_error=False, checks_only=True)
    evaluation = next(e.event_specific_data for e in result.all_events
                      if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                      and e.event_specific_data.partition is None  # the whole run's verdict
                      and e.event_specific_data.check_name == "deterministic")
    assert not evaluation.passed
    verdict = raw_value(evaluation.metadata["verdicts"])["2026-01-06"]
    assert {f["code"] for f in verdict["findings"]} == {"profile_drift", "plan_hash_mismatch"}


def test_checks_alone_read_partition_from_run_tags(sandbox: Sandbox,
                                                   sandbox_profiles: Path, secrets_env: dict,
                                                   dagster_instance: DagsterInstance) -> None:
    partition = "2026-01-08"
    defs = _defs(sandbox_profiles)
    assert _materialize(defs, dagster_instance, AssetSelection.assets(ORDERS), partition).success
    result = _materialize(defs, dagster_instance, AssetSelection.checks_for_assets(ORDERS),
                          partition, checks_only=True)
    evaluations = [e.event_specific_data for e in result.all_events
                   if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                   and e.event_specific_data.partition is None]
    assert all(e.passed for e in evaluations) and len(evaluations) == 3
    assert all(raw_value(e.metadata["partitions_checked"]) == 1 for e in evaluations)
