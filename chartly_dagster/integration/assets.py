"""The asset factory: one partitioned asset per resolved connector profile.

Built like `@dlt_assets`/`@sling_assets`: a translator decides the spec, the body hands the
work to the event iterator, and the resources supply storage, secrets and egress policy.
Assets return `MaterializeResult` and write their Parquet files themselves, because no IO
manager can store one output that covers several partitions.
"""

# No `from __future__ import annotations`: Dagster inspects the decorated functions' real
# annotations to find the context type and resources.

import warnings
from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetObservation,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    MaterializeResult,
    multi_asset,
)

from ..core.catalog import ResolvedProfile
from .events import connector_event_iterator
from .resources import ChartlyEgressResource, ChartlySecretsResource, ChartlyStorageResource
from .translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData

DEFAULT_MAX_PARTITIONS_PER_RUN = 31
STORAGE_KEY = "chartly_storage"
SECRETS_KEY = "chartly_secrets"
EGRESS_KEY = "chartly_egress"


def backfill_policy_for(max_partitions_per_run: int | None) -> BackfillPolicy:
    """Ranges run as one run each, at most `max_partitions_per_run` windows long.

    None means one run for any range: what `dagster asset materialize --partition-range`
    requires. Backfill policies are a beta API; the warning is silenced on purpose.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        if max_partitions_per_run is None:
            return BackfillPolicy.single_run()
        return BackfillPolicy.multi_run(max_partitions_per_run)


def build_connector_asset(resolved: ResolvedProfile, *, env: str,
                          translator: ConnectorProfileTranslator | None = None,
                          max_partitions_per_run: int | None = DEFAULT_MAX_PARTITIONS_PER_RUN,
                          ) -> AssetsDefinition:
    """One asset for one resolved profile, partitioned by the profile's windows."""
    translator = translator or ConnectorProfileTranslator()
    data = ConnectorProfileTranslatorData(resolved, env)
    spec = translator.get_asset_spec(data)
    partitions_def = spec.partitions_def
    if partitions_def is None:
        raise ValueError(f"translator returned no partitions_def for {spec.key.to_user_string()}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)

        @multi_asset(specs=[spec], name=spec.key.to_python_identifier(),
                     backfill_policy=backfill_policy_for(max_partitions_per_run),
                     pool=translator.get_pool(data))
        def _connector_asset(context: AssetExecutionContext,
                             chartly_storage: ChartlyStorageResource,
                             chartly_secrets: ChartlySecretsResource,
                             chartly_egress: ChartlyEgressResource,
                             ) -> Iterator[AssetObservation | MaterializeResult]:
            if chartly_egress.env != env:
                raise ValueError(f"asset {spec.key.to_user_string()} is defined for env {env!r} "
                                 f"but the chartly_egress resource is set to "
                                 f"{chartly_egress.env!r}")
            yield from connector_event_iterator(
                context, resolved=resolved, key=spec.key, partitions_def=partitions_def,
                env=env, destination=chartly_storage.destination(context.instance),
                staging_dir=chartly_storage.staging_dir(context.instance),
                secrets=chartly_secrets.resolver(), env_policy=chartly_egress.policy(),
                record_responses=chartly_storage.record_responses)
            yield MaterializeResult(asset_key=spec.key)

    return _connector_asset
