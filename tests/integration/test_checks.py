"""The connector asset's blocking checks through Dagster: `complete`, one read per file, and
no check execution left PLANNED after a single-run range.

Everything runs through Dagster (`materialize`, a job's range run) with a real SQLite
instance against the sandbox; only `completeness_verdict`, a pure function of the stored
metadata, is also called directly for the cases the sandbox cannot produce cheaply.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    materialize,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.integration._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from chartly_dagster.integration.checks import (
    CHECK_NAMES,
    COMPLETE_CHECK,
    completeness_verdict,
)
from chartly_dagster.integration.metadata import raw_value
from chartly_dagster.runtime import storage
from chartly_dagster.runtime.paginate import EXPLICIT_ENDS
from chartly_dagster.sandbox import Sandbox
from examples.summary import daily_summaries
from tests.support.paths import REPO
from tests.support.shipped import ORDERS, ORDERS_TYPED, SALES_JOB, SALES_SUMMARY

RANGE = ("2026-01-01", "2026-01-03")
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


def _defs(profiles: Path) -> Definitions:
    return build_definitions(profiles, env="dev", downstream=daily_summaries)


def _sales_only(defs: Definitions) -> list[Any]:
    """The sales project's (daily) assets and checks: one run, one partitions definition."""
    def in_sales(key: AssetKey) -> bool:
        return key.path[:2] == ["tenant-demo", "proj-sales"]

    assets = [a for a in defs.assets or [] if all(in_sales(k) for k in a.keys)]
    checks = [c for c in defs.asset_checks or [] if all(
        in_sales(k.asset_key) for k in c.check_keys)]
    return [*assets, *checks]


def _evaluations(result: Any, key: AssetKey = ORDERS) -> dict[str, Any]:
    return {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
            if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            and e.event_specific_data.asset_key == key}


def _meta(instance: DagsterInstance, partition: str) -> PartitionMetadata:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[partition]), limit=1).records
    assert records and records[0].asset_materialization is not None
    return PartitionMetadata.extract(records[0].asset_materialization.metadata)


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each written partition file is opened for reading, by URI."""
    reads: Counter[str] = Counter()
    real = storage.iter_window_batches

    def counted(uri: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        reads[uri] += 1
        return real(uri, batch_size)

    monkeypatch.setattr(storage, "iter_window_batches", counted)
    return reads


def test_range_run_checks_every_partition_once_and_leaves_nothing_planned(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance, file_reads: Counter[str]) -> None:
    defs = _defs(sandbox_profiles)
    result = defs.resolve_job_def(SALES_JOB).execute_in_process(
        instance=dagster_instance, tags={ASSET_PARTITION_RANGE_START_TAG: RANGE[0],
                                         ASSET_PARTITION_RANGE_END_TAG: RANGE[1]})
    assert result.success
    metas = {pk: _meta(dagster_instance, pk) for pk in DAYS}
    for pk, meta in metas.items():  # how each window ended is on its own partition
        assert meta.outcome == "complete" and meta.capped_by is None, pk
        assert meta.ended_by in EXPLICIT_ENDS, (pk, meta.ended_by)
        assert meta.declared_total is not None and meta.declared_total == meta.records_served
    evaluations = _evaluations(result)
    assert set(evaluations) == set(CHECK_NAMES)
    for name, evaluation in evaluations.items():
        assert evaluation.passed, name
        by_partition = raw_value(evaluation.metadata["by_partition"])
        assert by_partition == dict.fromkeys(DAYS, "passed"), name
    # The three checks read each of the orders files once between them.
    orders_reads = {uri: n for uri, n in file_reads.items() if "/orders/" in uri}
    assert orders_reads == {meta.uri: 1 for meta in metas.values()}
    # A single-run range leaves no check execution PLANNED, for any asset of the run.
    for checks in defs.asset_checks or []:
        for check_key in checks.check_keys:
            history = dagster_instance.event_log_storage.get_asset_check_execution_history(
                check_key, limit=20)
            if check_key.asset_key.path[:2] != ["tenant-demo", "proj-sales"]:
                assert not history, check_key
                continue
            statuses = {r.partition: r.status for r in history}
            assert not {p for p, s in statuses.items()
                        if s == AssetCheckExecutionRecordStatus.PLANNED}, (check_key, statuses)
            # each partition's verdict is stored under that partition, next to the whole run's
            assert set(statuses) == {None, *DAYS}, (check_key, statuses)


def test_capped_window_fails_complete_naming_the_cap_and_skips_downstream(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    path = sandbox_profiles / "sales" / "orders.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["spec"]["limits"] = {"maxPages": 1}  # the day has two pages of orders
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    defs = _defs(sandbox_profiles)
    # The summary reads the typed table, which the connector's blocking checks gate.
    selection = (AssetSelection.assets(ORDERS, ORDERS_TYPED, SALES_SUMMARY)
                 | AssetSelection.checks_for_assets(ORDERS))
    result = materialize(_sales_only(defs), instance=dagster_instance, selection=selection,
                         partition_key="2026-01-05", resources=defs.resources,
                         raise_on_error=False)
    assert not result.success
    meta = _meta(dagster_instance, "2026-01-05")  # recorded, and says how it ended
    assert (meta.outcome, meta.ended_by, meta.capped_by) == ("capped", "cap:maxPages",
                                                              "max_pages")
    evaluations = _evaluations(result)
    assert evaluations["envelope_valid"].passed and evaluations["deterministic"].passed
    complete = evaluations[COMPLETE_CHECK]
    assert not complete.passed
    verdict = raw_value(complete.metadata["verdicts"])["2026-01-05"]
    assert verdict["findings"][0]["code"] == "capped"
    assert verdict["findings"][0]["cap"] == "limits.maxPages"
    assert raw_value(complete.metadata["by_partition"]) == {"2026-01-05": "failed: capped"}
    downstream = [e for e in result.all_events
                  if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
                  and e.asset_key in (ORDERS_TYPED, SALES_SUMMARY)]
    assert not downstream, "the typed table or the summary ran over a capped window"
    history = dagster_instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(ORDERS, COMPLETE_CHECK), limit=5)
    assert {r.partition: r.status for r in history} == {
        None: AssetCheckExecutionRecordStatus.FAILED,
        "2026-01-05": AssetCheckExecutionRecordStatus.FAILED}


def test_complete_check_alone_reads_no_file(sandbox: Sandbox, sandbox_profiles: Path,
                                            secrets_env: dict, dagster_instance: DagsterInstance,
                                            file_reads: Counter[str]) -> None:
    defs = _defs(sandbox_profiles)
    assert materialize(_sales_only(defs), instance=dagster_instance,
                       selection=AssetSelection.assets(ORDERS), partition_key="2026-01-06",
                       resources=defs.resources).success
    file_reads.clear()  # that run checked the partition too (an asset's selection has them)
    result = materialize(_sales_only(defs), instance=dagster_instance,
                         selection=AssetSelection.checks(AssetCheckKey(ORDERS, COMPLETE_CHECK)),
                         tags={PARTITION_NAME_TAG: "2026-01-06"}, resources=defs.resources)
    evaluations = [e.event_specific_data for e in result.all_events
                   if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    assert {(e.check_name, e.partition, e.passed) for e in evaluations} == {
        (COMPLETE_CHECK, None, True), (COMPLETE_CHECK, "2026-01-06", True)}
    assert not file_reads  # `complete` judges the recorded metadata only


def test_golden_mismatch_fails_deterministic_on_every_partition(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    # The shipped dev golden pins port 8765; the sandbox runs elsewhere, so it differs.
    golden = sandbox_profiles.parent / "golden" / "orders.dev.plan.json"
    golden.parent.mkdir()
    shutil.copy(REPO / "golden" / "orders.dev.plan.json", golden)
    path = sandbox_profiles / "sales" / "orders.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["variants"]["dev"]["spec"]["golden"] = "golden/orders.dev.plan.json"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    defs = _defs(sandbox_profiles)
    result = materialize(_sales_only(defs), instance=dagster_instance,
                         selection=AssetSelection.assets(ORDERS), partition_key="2026-01-07",
                         resources=defs.resources, raise_on_error=False)
    evaluations = {(e.event_specific_data.check_name, e.event_specific_data.partition):
                   e.event_specific_data for e in result.all_events
                   if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION}
    whole = evaluations[("deterministic", None)]
    assert not whole.passed and raw_value(whole.metadata["golden_ok"]) is False
    assert raw_value(whole.metadata["by_partition"]) == {"2026-01-07": "failed: golden_mismatch"}
    assert not evaluations[("deterministic", "2026-01-07")].passed
    assert evaluations[("complete", "2026-01-07")].passed


def _complete(**fields: Any) -> PartitionMetadata:
    base: dict[str, Any] = {"outcome": "complete", "ended_by": "short_page",
                            "declared_total": None, "records_served": 10}
    return PartitionMetadata(**{**base, **fields})


@pytest.mark.parametrize(("fields", "codes"), [
    ({}, []),
    ({"ended_by": "total_reached", "declared_total": 10}, []),
    ({"ended_by": "total_reached", "declared_total": 12}, ["incomplete_window"]),
    ({"outcome": "capped", "ended_by": "cap:maxRecords", "capped_by": "max_records",
      "declared_total": 12}, ["capped"]),
    ({"outcome": "stopped_on_finding", "ended_by": "stopped_on_finding",
      "findings": ({"code": "possibly_truncated", "message": "full last page"},)},
     ["no_explicit_end", "possibly_truncated"]),
    ({"ended_by": None}, ["end_not_recorded"]),
], ids=["explicit-end", "total-matched", "total-mismatch", "capped", "truncated",
        "end-unknown"])
def test_completeness_verdict(fields: dict[str, Any], codes: list[str]) -> None:
    verdict = completeness_verdict(_complete(**fields))
    assert [f["code"] for f in verdict["findings"]] == codes
    assert verdict["ok"] is (not codes)
