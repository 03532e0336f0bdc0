"""The `s3://` storage root against a real S3-compatible server on loopback.

moto's server mode (a werkzeug HTTP server speaking the S3 API) runs on a free 127.0.0.1
port for the test; s3fs finds it through the standard `AWS_ENDPOINT_URL_S3` variable, as
it would find MinIO or a cloud endpoint. A single-run range materializes three windows
into the bucket, the checks read them back from it, and a run that failed mid-window is
re-executed from failure and resumes after its last staged page.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import fsspec
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    JobDefinition,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from moto.server import ThreadedMotoServer

from chartly_dagster.integration import (
    ChartlyResource,
    PartitionMetadata,
    StorageConfig,
    build_definitions,
)
from chartly_dagster.integration import metadata as md
from chartly_dagster.sandbox import Fault, Sandbox
from tests.support.shipped import ORDERS

BUCKET = "chartly-lake"
ROOT = f"s3://{BUCKET}/raw"
PARTITIONS = ["2026-01-10", "2026-01-11", "2026-01-12"]
RANGE_TAGS = {ASSET_PARTITION_RANGE_START_TAG: PARTITIONS[0],
              ASSET_PARTITION_RANGE_END_TAG: PARTITIONS[-1]}


def orders_job(profiles_dir: str) -> JobDefinition:
    """Module-level, so re-execution can rebuild the job: orders, its checks, the S3 root."""
    defs = build_definitions(profiles_dir, resource=ChartlyResource(
        env="dev", storage=StorageConfig(root=ROOT)))
    return defs.resolve_job_def("tenant_demo__proj_sales__orders_job")


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 endpoint on a free loopback port with an empty bucket; its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "test-access", "AWS_SECRET_ACCESS_KEY":
                        "test-secret", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL_S3": endpoint}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    fsspec.filesystem("s3").clear_instance_cache()  # no client from another endpoint
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
        server.stop()


def _parquet_objects(endpoint: str) -> list[str]:
    """Parquet keys in the bucket (s3fs also writes empty "folder/" marker objects)."""
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET)
    return sorted(item["Key"] for item in listing.get("Contents", [])
                  if item["Key"].endswith(".parquet"))


def _day(pk: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(f"{pk}T00:00:00+00:00")
    return start, start + timedelta(days=1)


def _window_offsets(sandbox: Sandbox, pk: str) -> list[str | None]:
    """The offsets requested for one day's window of /v2/orders (epoch-second `from`)."""
    start = str(int(_day(pk)[0].timestamp()))
    return [query.get("offset") for _, path, query in sandbox.request_log
            if path == "/v2/orders" and query.get("from") == start]


def test_range_run_writes_to_s3_checks_read_back_and_a_rerun_resumes(
        s3_server: str, sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    # Window two's second page fails with a 401 (never retried): the run fails after
    # windows one and three were written to the bucket and window two's first page was
    # staged. The fault names the page, not a request ordinal: the windows are fetched
    # side by side, so which request comes fourth is not fixed.
    second_page = {"from": str(int(_day(PARTITIONS[1])[0].timestamp())), "offset": "1000"}
    sandbox.faults.add(Fault(kind="status", status=401, endpoint="/v2/orders",
                             query=second_page, times=1))
    recon = build_reconstructable_job(__name__, "orders_job",
                                      reconstructable_args=(str(sandbox_profiles),))
    with execute_job(recon, instance=dagster_instance, tags=RANGE_TAGS) as first:
        assert not first.success
        first_id = first.run_id
    assert _window_offsets(sandbox, PARTITIONS[1]) == ["0", "1000"]

    with execute_job(recon, instance=dagster_instance, tags=RANGE_TAGS,
                     reexecution_options=ReexecutionOptions.from_failure(
                         first_id, dagster_instance)) as second:
        assert second.success
        evaluations = {e.event_specific_data.check_name: e.event_specific_data
                       for e in second.all_events
                       if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                       and e.event_specific_data.partition is None}

    # The failed window resumed at its second page: its first page was fetched once.
    assert _window_offsets(sandbox, PARTITIONS[1]) == ["0", "1000", "1000"]
    objects = _parquet_objects(s3_server)
    assert [k for k in objects if k.startswith("raw/tenant-demo/")] == [
        f"raw/tenant-demo/proj-sales/orders/{pk}.parquet" for pk in PARTITIONS]
    # The typed table lands next to it, one Hive-style folder per window.
    assert [k for k in objects if k.startswith("raw/typed/")] == [
        f"raw/typed/tenant-demo/proj-sales/orders_typed/window={pk}T00:00:00Z/part-0.parquet"
        for pk in PARTITIONS]
    filesystem = fsspec.filesystem("s3")
    for pk in PARTITIONS:
        records = dagster_instance.fetch_materializations(
            AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[pk]), limit=1).records
        assert records, pk
        mat = records[0].asset_materialization
        assert mat is not None
        meta = PartitionMetadata.extract(mat.metadata)
        assert meta.uri == f"{ROOT}/tenant-demo/proj-sales/orders/{pk}.parquet"
        with filesystem.open(meta.uri.removeprefix("s3://"), "rb") as handle:
            ids = pq.read_table(handle, columns=["event_id"]).column("event_id").to_pylist()
        truth = sandbox.ground_truth("/v2/orders", *_day(pk))
        assert len(ids) == len(set(ids)) == len(truth) == meta.records > 0, pk
    assert set(evaluations) == {"envelope_valid", "deterministic", "complete", "schema_drift"}
    for name, evaluation in evaluations.items():
        assert evaluation.passed, (name, evaluation.metadata)
        verdicts = md.raw_value(evaluation.metadata["verdicts"])
        assert sorted(verdicts) == PARTITIONS and all(v["ok"] for v in verdicts.values())
