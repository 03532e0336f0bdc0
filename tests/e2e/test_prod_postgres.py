"""Dagster on PostgreSQL: the shipped deploy/postgres/dagster.yaml against a real server.

A throwaway PostgreSQL cluster (tests/support/postgres.py) runs on loopback; the instance is
built from the same dagster.yaml a deployment uses, with the password from the
environment. A partition range is materialized through Dagster and the per-partition
checkpoints and check results are read back from Postgres, through a second instance and
straight from the tables. The distributed example (deploy/k8s) is checked offline: its
instance file against Dagster's schema, its code location loading with an s3:// root.
"""

from __future__ import annotations

import runpy
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import fsspec
import psycopg2
import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    EnvVar,
    EventLogEntry,
)
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import deserialize_value
from dagster_postgres import (
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.integration._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from chartly_dagster.integration.metadata import raw_value
from chartly_dagster.sandbox import Sandbox
from tests.support.paths import REPO
from tests.support.postgres import PostgresServer
from tests.support.shipped import ORDERS, ORDERS_JOB

PG_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
PARTITIONS = ["2026-01-02", "2026-01-03", "2026-01-04"]


@pytest.fixture
def pg_home(tmp_path: Path, pg_env: PostgresServer) -> Path:
    """A DAGSTER_HOME holding exactly the shipped Postgres variant of dagster.yaml."""
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(PG_YAML, home / "dagster.yaml")
    return home


@pytest.fixture
def pg_instance(pg_home: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.from_config(str(pg_home)) as instance:
        yield instance


def test_yaml_keeps_the_password_out_and_selects_postgres_everywhere(
        pg_instance: DagsterInstance, pg_env: PostgresServer) -> None:
    text = PG_YAML.read_text(encoding="utf-8")
    assert pg_env.password not in text and "password: {env: DAGSTER_PG_PASSWORD}" in text
    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)
    config = pg_instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    assert config.pool_config.pool_granularity.value == "op"


def test_server_requires_the_password(pg_env: PostgresServer) -> None:
    # So an instance that connects (above, below) got the password from DAGSTER_PG_PASSWORD.
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=pg_env.host, port=pg_env.port, user=pg_env.user,
                         password="not-the-password", dbname=pg_env.db_name)


def test_range_run_on_postgres_checkpoints_and_checks_read_back(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        pg_home: Path, pg_instance: DagsterInstance, pg_env: PostgresServer) -> None:
    job = build_definitions(sandbox_profiles, env="dev").resolve_job_def(ORDERS_JOB)
    result = job.execute_in_process(instance=pg_instance, tags={
        ASSET_PARTITION_RANGE_START_TAG: PARTITIONS[0],
        ASSET_PARTITION_RANGE_END_TAG: PARTITIONS[-1]})
    assert result.success
    sqlite_files = sorted(p.name for p in pg_home.rglob("*.db"))
    assert not sqlite_files, f"SQLite storage next to the Postgres config: {sqlite_files}"

    # A second instance (a new connection, as the webserver or another worker would have).
    with DagsterInstance.from_config(str(pg_home)) as reader:
        runs = reader.get_run_records()
        assert [r.dagster_run.run_id for r in runs] == [result.run_id]
        watermarks = {}
        for pk in PARTITIONS:
            records = reader.fetch_materializations(
                AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[pk]), limit=1).records
            assert records, f"no materialization of {pk} in Postgres"
            meta = PartitionMetadata.extract(records[0].asset_materialization.metadata)
            checkpoint = meta.checkpoint
            assert checkpoint is not None
            assert checkpoint["scope"] == {"tenant": "tenant-demo", "project": "proj-sales",
                                           "connector": "orders", "partition": pk}
            assert checkpoint["checkpoint_type"] and "payload" in checkpoint
            truth = sandbox.ground_truth("/v2/orders", f"{pk}T00:00:00Z",
                                         _next_day(pk) + "T00:00:00Z")
            assert meta.records == len(truth) > 0
            watermarks[pk] = meta.watermark
        assert len(set(watermarks.values())) == len(PARTITIONS)
        for check in ("envelope_valid", "deterministic", "complete"):
            # One evaluation per run covering every partition it materialized, and one per
            # partition resolving the row Dagster books for each partition of the range.
            history = reader.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(ORDERS, check), limit=10)
            assert {h.status.value for h in history} == {"SUCCEEDED"}, check
            assert sorted((h.run_id, h.partition or "") for h in history) == [
                (result.run_id, pk) for pk in ["", *PARTITIONS]], check
            done = [h for h in history if h.partition is None]
            evaluation = done[0].event.dagster_event.event_specific_data
            assert evaluation.passed, check
            verdicts = raw_value(evaluation.metadata["verdicts"])
            assert sorted(verdicts) == PARTITIONS
            assert all(v["ok"] for v in verdicts.values()), verdicts

    # Straight from the tables: the rows really are in this PostgreSQL database.
    conn = pg_env.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT partition, event FROM event_logs WHERE dagster_event_type = "
                        "'ASSET_MATERIALIZATION' AND asset_key = %s ORDER BY partition",
                        (ORDERS.to_string(),))
            rows = cur.fetchall()
            cur.execute("SELECT check_name, execution_status FROM asset_check_executions "
                        "WHERE asset_key = %s AND run_id = %s AND partition IS NULL "
                        "ORDER BY check_name", (ORDERS.to_string(), result.run_id))
            checks = cur.fetchall()
    finally:
        conn.close()
    assert [partition for partition, _ in rows] == PARTITIONS
    for partition, event in rows:  # each stored event carries its partition's checkpoint
        mat = deserialize_value(event, EventLogEntry).asset_materialization
        assert mat is not None and mat.partition == partition
        checkpoint = PartitionMetadata.extract(mat.metadata).checkpoint
        assert checkpoint is not None and checkpoint["scope"]["partition"] == partition
    assert checks == [("complete", "SUCCEEDED"), ("deterministic", "SUCCEEDED"),
                      ("envelope_valid", "SUCCEEDED")]


def _next_day(pk: str) -> str:
    return (date.fromisoformat(pk) + timedelta(days=1)).isoformat()


def test_k8s_instance_yaml_is_postgres_with_connector_pools(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The instance schema (the launcher's own config needs dagster-k8s; see README).
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "chartly")
    config, _ = dagster_instance_config(str(REPO / "deploy" / "k8s"))
    assert config["storage"] == yaml.safe_load(PG_YAML.read_text(encoding="utf-8"))["storage"]
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    # the run pods get the database password from a Kubernetes Secret, not from the file
    assert config["run_launcher"]["config"]["postgres_password_secret"]


def test_distributed_definitions_load_with_an_object_storage_root(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What `dagster definitions validate -f deploy/k8s/definitions.py` checks, no network."""
    root = "s3://chartly-example/partitions"
    monkeypatch.setenv("CHARTLY_STORAGE_ROOT", root)
    monkeypatch.setenv("CHARTLY_STAGING_ROOT", str(tmp_path / "staging"))
    monkeypatch.setenv("CHARTLY_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.delenv("CHARTLY_ENV", raising=False)
    defs = runpy.run_path(str(REPO / "deploy" / "k8s" / "definitions.py"))["defs"]
    Definitions.validate_loadable(defs)
    pools = {key.to_user_string(): op.pool for asset in defs.assets or []
             for key in asset.keys for op in asset.node_def.iterate_op_defs()}
    connectors = {k: v for k, v in pools.items() if not k.endswith("_typed")}
    assert len(connectors) == 6 and all(k == v for k, v in connectors.items()), pools
    chartly = defs.resources["chartly"]
    assert chartly.env == "prod"
    assert isinstance(chartly.storage.root, EnvVar)  # the UI shows the variable, not the bucket
    with DagsterInstance.ephemeral() as instance:
        live = chartly.process_config_and_initialize()
        assert live.storage.destination(instance) == root
        assert fsspec.core.split_protocol(live.storage.destination(instance))[0] == "s3"
        assert live.storage.staging_dir(instance) == str(tmp_path / "staging")
