"""Egress timeout caps: the deployment's EgressConfig can only shorten a profile's
transport timeouts, and a capped request that runs long is a transient (retried) failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetRecordsFilter, DagsterInstance, materialize

from chartly_dagster.core.errors import UpstreamUnavailable
from chartly_dagster.core.profile import Transport
from chartly_dagster.integration import (
    ChartlyResource,
    EgressConfig,
    PartitionMetadata,
    build_definitions,
)
from chartly_dagster.runtime.egress import EnvPolicy
from chartly_dagster.sandbox import Fault, Sandbox
from tests.support.live import DAY, Live, RecordingSleep
from tests.support.shipped import ORDERS

NAME, PATH = "sales-feed", "/v1/feed"
# The sandbox stalls 600 ms before answering; the profiles' own timeout is 10 s.
SLOW = 600


def test_caps_only_lower_the_profile_timeouts() -> None:
    transport = Transport.model_validate({"baseUrl": "https://api.example.invalid",
                                          "timeoutMs": 2_000, "connectTimeoutMs": 1_000,
                                          "deadlineMs": 30_000})
    capped = EnvPolicy(max_timeout_ms=500, max_connect_timeout_ms=5_000,
                       max_deadline_ms=10_000).capped(transport)
    assert (capped.timeout_ms, capped.connect_timeout_ms, capped.deadline_ms) == (
        500, 1_000, 10_000)
    assert EnvPolicy().capped(transport) == transport
    with pytest.raises(ValueError, match="max_deadline_ms"):
        EnvPolicy(max_deadline_ms=0)
    policy = EgressConfig(max_timeout_ms=250, max_deadline_ms=9_000,
                          allowed_cidrs={"prod": ["10.0.0.0/8"]}).policy()
    assert (policy.max_timeout_ms, policy.max_connect_timeout_ms, policy.max_deadline_ms) == (
        250, None, 9_000)
    assert policy.allowable_cidrs["prod"] == ("10.0.0.0/8",)


def test_profile_timeout_rides_out_a_slow_response(live: Live) -> None:
    live.sandbox.faults.add(Fault("slow", endpoint=PATH, delay_ms=SLOW, on_request=1))
    result = live.fetch(NAME, DAY)
    assert result.retries == 0 and result.outcome == "complete"


def test_cap_below_the_delay_times_out_as_transient_and_retries(live: Live) -> None:
    live.sandbox.faults.add(Fault("slow", endpoint=PATH, delay_ms=SLOW, on_request=1))
    sleep = RecordingSleep()
    result = live.fetch(NAME, DAY, sleep=sleep, env_policy=EnvPolicy(max_timeout_ms=150))
    assert result.retries == 1 and result.outcome == "complete"
    assert len(sleep.calls) == 1  # one backoff: the timeout was classified transient


def test_cap_below_the_delay_fails_unavailable_when_retries_run_out(live: Live) -> None:
    variant = live.add_variant(NAME, "devonce", {"retry": {"maxAttempts": 1}})
    live.sandbox.faults.add(Fault("slow", endpoint=PATH, delay_ms=SLOW, on_request=1))
    with pytest.raises(UpstreamUnavailable) as info:
        live.fetch(NAME, DAY, variant=variant, env_policy=EnvPolicy(max_timeout_ms=150))
    assert info.value.retry_class == "transient" and info.value.code == "unavailable"
    assert "timeout" in info.value.message


def test_resource_cap_reaches_the_asset(sandbox: Sandbox, sandbox_profiles: Path,
                                        secrets_env: dict,
                                        dagster_instance: DagsterInstance) -> None:
    sandbox.faults.add(Fault("slow", endpoint="/v2/orders", delay_ms=SLOW, on_request=1))
    defs = build_definitions(sandbox_profiles, schedules=False, resource=ChartlyResource(
        env="dev", egress=EgressConfig(max_timeout_ms=150)))
    orders = [a for a in defs.assets or [] if ORDERS in a.keys]
    result = materialize(orders, instance=dagster_instance, partition_key="2026-01-05",
                         resources=defs.resources)
    assert result.success
    record = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=["2026-01-05"]), limit=1).records[0]
    assert record.asset_materialization is not None
    assert PartitionMetadata.extract(record.asset_materialization.metadata).retries == 1
