"""Truthful resume reporting through Dagster: a re-execution whose staged pages are gone
(its manifest still names the resume point) says so in the run's event log and records 0
resumed pages (issue 15, item 7)."""

from __future__ import annotations

import logging
from pathlib import Path

from dagster import (
    AssetRecordsFilter,
    DagsterInstance,
    JobDefinition,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
)

from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.sandbox import Fault, Sandbox
from tests.support.shipped import ORDERS

PARTITION = "2026-01-10"


def orders_job(profiles_dir: str) -> JobDefinition:
    """Module-level, so a re-execution can rebuild the job from its arguments."""
    return build_definitions(Path(profiles_dir), env="dev").resolve_job_def(
        "tenant_demo__proj_sales__orders_job")


def _messages(instance: DagsterInstance, run_id: str, level: int) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)
            if entry.level == level and entry.user_message]


def test_reexecution_without_staged_pages_says_staging_lost_and_resumes_nothing(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    # Page 1 is staged and observed, page 2 fails (auth errors are never retried).
    sandbox.faults.add(Fault(kind="status", status=401, endpoint="/v2/orders",
                             on_request=2, times=1))
    recon = build_reconstructable_job(__name__, "orders_job",
                                      reconstructable_args=(str(sandbox_profiles),))
    tags = {"dagster/partition": PARTITION}
    with execute_job(recon, instance=dagster_instance, tags=tags) as first:
        assert not first.success
        first_id = first.run_id
    staging = Path(dagster_instance.root_directory) / "chartly" / "staging"
    pages = list(staging.rglob("page-*.arrow"))
    assert pages, "page 1 was not staged"
    assert list(staging.rglob("manifest.json")), "no resume point next to the pages"
    for page in pages:  # the pages are lost, the manifest naming the resume point is not
        page.unlink()
    sandbox.clear_requests()
    with execute_job(recon, instance=dagster_instance, tags=tags, reexecution_options=(
            ReexecutionOptions.from_failure(first_id, dagster_instance))) as second:
        assert second.success
        second_id = second.run_id
    warnings = _messages(dagster_instance, second_id, logging.WARNING)
    assert any(f"{PARTITION}: staging lost, fetching from page 0" in m for m in warnings), \
        warnings
    assert not any("resuming after page" in m
                   for m in _messages(dagster_instance, second_id, logging.INFO))
    record = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[PARTITION]), limit=1).records[0]
    assert record.asset_materialization is not None
    meta = PartitionMetadata.extract(record.asset_materialization.metadata)
    assert meta.resumed_from_page == 0
    offsets = [query.get("offset") for _, path, query in sandbox.request_log
               if path == "/v2/orders"]
    assert offsets[0] == "0"  # page 1 fetched again, as the log says
    assert meta.pages == len(offsets)
