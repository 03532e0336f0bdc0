"""Definitions built from the shipped profiles: specs, partitions, checks, jobs, resources."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, AssetSpec, DefaultScheduleStatus

from chartly_dagster.core.profile import PartitionsSpec
from chartly_dagster.integration import (
    ChartlyResource,
    ConnectorProfileTranslator,
    ConnectorProfileTranslatorData,
    build_definitions,
)
from chartly_dagster.integration.partitions import partitions_def_for, window_for_partition
from tests.support.paths import PROFILES
from tests.support.shipped import ORDERS


def test_every_dev_profile_is_one_checked_partitioned_asset() -> None:
    defs = build_definitions(PROFILES, env="dev")
    graph = defs.resolve_asset_graph()
    spec = graph.get(ORDERS)
    assert spec.group_name == "tenant_demo__proj_sales"
    assert set(spec.owners) == {"team:integrations", "orders-oncall@example.invalid"}
    assert spec.tags["chartly/env"] == "dev"
    assert (spec.tags["chartly/version"], spec.tags["chartly/variant"]) == ("2.1.0", "dev")
    # One key, one meaning: the full ref, as on every materialization of the asset.
    assert spec.metadata["chartly/profile_ref"] == (
        "tenant-demo/proj-sales::connector/orders@2.1.0#dev")
    assert "chartly/profile_ref" not in spec.tags
    # A range is one run by default, as `dagster asset materialize --partition-range` needs.
    assert spec.backfill_policy is not None and spec.backfill_policy.max_partitions_per_run is None
    assert {k.name for k in graph.asset_check_keys if k.asset_key == ORDERS} == {
        "envelope_valid", "deterministic", "complete"}
    connectors = [k for k in graph.get_all_asset_keys() if not k.path[-1].endswith("_typed")]
    assert len(connectors) == 6  # the summary is an example, not built in
    assert defs.resources == {"chartly": ChartlyResource(env="dev")}
    jobs = {j.name for j in defs.jobs or []}
    assert {"tenant_demo__proj_sales", "tenant_demo__proj_ops__daily",
            "tenant_demo__proj_ops__hourly"} <= jobs
    schedules = list(defs.schedules or [])
    assert len(schedules) == 6
    assert all(s.default_status == DefaultScheduleStatus.STOPPED for s in schedules)


def test_translator_subclass_changes_keys_and_groups() -> None:
    class Flat(ConnectorProfileTranslator):
        def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(key=AssetKey(["raw", data.resolved.connector]),
                                           group_name="raw")

    defs = build_definitions(PROFILES, env="dev", translator=Flat())
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert AssetKey(["raw", "orders"]) in keys and ORDERS not in keys


def test_windows_follow_cadence_start_and_time_zone() -> None:
    hourly = partitions_def_for(PartitionsSpec.model_validate(
        {"cadence": "hourly", "start": "2026-03-29T00:00:00+01:00",
         "timezone": "Europe/Berlin"}))
    keys = hourly.get_partition_keys()[:3]
    assert keys == ["2026-03-29-00:00", "2026-03-29-01:00", "2026-03-29-03:00"]  # DST gap
    assert window_for_partition(hourly, keys[2]).to_dict() == {
        "start": "2026-03-29T01:00:00Z", "end": "2026-03-29T02:00:00Z"}
    custom = partitions_def_for(PartitionsSpec.model_validate(
        {"cadence": "custom", "cron": "30 */6 * * *", "start": "2026-01-01T00:00:00Z"}))
    assert window_for_partition(custom, "2026-01-01-06:30").to_dict() == {
        "start": "2026-01-01T06:30:00Z", "end": "2026-01-01T12:30:00Z"}


def test_range_runs_can_still_be_bounded() -> None:
    defs = build_definitions(PROFILES, env="dev", max_partitions_per_run=7)
    policy = defs.resolve_asset_graph().get(ORDERS).backfill_policy
    assert policy is not None and policy.max_partitions_per_run == 7


def test_env_is_set_in_one_place() -> None:
    prod = build_definitions(PROFILES, resource=ChartlyResource(env="prod"))
    assert prod.resources == {"chartly": ChartlyResource(env="prod")}
    graph = prod.resolve_asset_graph()
    assert {graph.get(k).tags["chartly/env"] for k in graph.get_all_asset_keys()} == {"prod"}
    with pytest.raises(ValueError, match="env= or resource=, not both"):
        build_definitions(PROFILES, env="dev", resource=ChartlyResource(env="dev"))


def test_secrets_folder_is_configured_by_variable_name_and_may_be_unset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = ChartlyResource(env="dev").secrets
    assert secrets.secrets_dir_env_var == "CHARTLY_SECRETS_DIR"
    monkeypatch.delenv("CHARTLY_SECRETS_DIR", raising=False)
    assert secrets.folder() is None  # no folder: only CHARTLY_SECRET_* variables
    monkeypatch.setenv("CHARTLY_SECRETS_DIR", str(tmp_path))
    assert secrets.folder() == str(tmp_path)
