"""The asset `build_definitions` makes for each profile: `@chartly_assets` with the usual body."""

# No `from __future__ import annotations`: Dagster inspects the decorated function's real
# annotations to find the context type and resources.

from collections.abc import Iterator

from dagster import AssetExecutionContext, AssetObservation, AssetsDefinition, MaterializeResult

from ..core.catalog import ResolvedProfile
from .asset_decorator import chartly_assets
from .resources import ChartlyResource
from .translator import ConnectorProfileTranslator


def build_connector_asset(resolved: ResolvedProfile, *, env: str,
                          translator: ConnectorProfileTranslator | None = None,
                          max_partitions_per_run: int | None = None) -> AssetsDefinition:
    """One asset for one resolved profile, partitioned by the profile's windows."""

    @chartly_assets(profile=resolved, translator=translator, env=env,
                    max_partitions_per_run=max_partitions_per_run)
    def _connector_asset(context: AssetExecutionContext, chartly: ChartlyResource
                         ) -> Iterator[AssetObservation | MaterializeResult]:
        yield from chartly.fetch(context)

    return _connector_asset
