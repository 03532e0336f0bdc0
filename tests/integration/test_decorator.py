"""`@chartly_assets` with a body the user writes, run through Dagster.

No `from __future__ import annotations` here: Dagster reads the decorated functions' real
annotations to find the context type and the resource.
"""

from pathlib import Path

from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    MaterializeResult,
    materialize,
)

from chartly_dagster.integration import (
    ChartlyResource,
    ConnectorProfileTranslator,
    PartitionMetadata,
    chartly_assets,
    load_profile,
)
from chartly_dagster.integration.metadata import (
    META_KEY_PROFILE,
    META_KEY_TRANSLATOR,
    OBSERVATION_KIND,
    PAGE,
    raw_value,
)
from chartly_dagster.sandbox import Fault, Sandbox

ORDERS_DEV = "tenant-demo/proj-sales::connector/orders@2.1.0#dev"


def test_user_body_wraps_the_event_iterator(sandbox: Sandbox, sandbox_profiles: Path,
                                            secrets_env: dict,
                                            dagster_instance: DagsterInstance) -> None:
    profile = load_profile(sandbox_profiles, ORDERS_DEV)
    translator = ConnectorProfileTranslator()
    seen: list[str] = []

    @chartly_assets(profile=profile, translator=translator)
    def orders(context: AssetExecutionContext, chartly: ChartlyResource):
        for event in chartly.fetch(context):
            seen.append(type(event).__name__)
            yield event

    spec_metadata = orders.metadata_by_key[orders.key]
    assert spec_metadata[META_KEY_PROFILE] is profile
    assert spec_metadata[META_KEY_TRANSLATOR] is translator
    result = materialize([orders], instance=dagster_instance,
                         partition_key="2026-01-05", resources={
                             "chartly": ChartlyResource(env="dev",
                                                        progress_interval_seconds=3600)})
    assert result.success
    # The window's completion (it ended within its first progress interval), then the one
    # result of the step.
    assert seen == ["AssetObservation", MaterializeResult.__name__]
    meta = PartitionMetadata.extract(
        result.asset_materializations_for_node(orders.node_def.name)[0].metadata)
    assert meta.profile_ref == ORDERS_DEV and meta.env == "dev" and meta.records > 0


def test_a_window_longer_than_the_interval_reports_its_pages(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    @chartly_assets(profile=load_profile(sandbox_profiles, ORDERS_DEV))
    def orders(context: AssetExecutionContext, chartly: ChartlyResource):
        yield from chartly.fetch(context)

    # Every page is answered 100 ms after it is asked for, twice the interval: each page
    # comes at least one interval after the last report, so each is due, whatever the
    # clock's resolution (and the window's end is reported besides).
    sandbox.faults.add(Fault(kind="slow", endpoint="/v2/orders", times=None, delay_ms=100))
    result = materialize([orders], instance=dagster_instance, partition_key="2026-01-05",
                         resources={"chartly": ChartlyResource(
                             env="dev", progress_interval_seconds=0.05)})
    assert result.success
    meta = PartitionMetadata.extract(
        result.asset_materializations_for_node(orders.node_def.name)[0].metadata)
    observed = [e.event_specific_data.asset_observation.metadata for e in result.all_events
                if e.event_type_value == "ASSET_OBSERVATION"]
    kinds = [raw_value(m[OBSERVATION_KIND]) for m in observed]
    assert kinds == ["page"] * meta.pages + ["window_complete"]
    assert [raw_value(m[PAGE]) for m in observed[:-1]] == list(range(1, meta.pages + 1))


def test_resource_env_the_profile_does_not_allow_fails_before_any_request(
        sandbox: Sandbox, sandbox_profiles: Path, dagster_instance: DagsterInstance) -> None:
    @chartly_assets(profile=load_profile(sandbox_profiles, ORDERS_DEV))
    def orders(context: AssetExecutionContext, chartly: ChartlyResource):
        yield from chartly.fetch(context)

    result = materialize([orders], instance=dagster_instance, partition_key="2026-01-05",
                         resources={"chartly": ChartlyResource(env="prod")},
                         raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "not enabled for env 'prod'" in message and ORDERS_DEV in message
    assert sandbox.request_log == []
