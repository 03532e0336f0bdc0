"""Dagster integration for chartly connector profiles (the dagster-sling/dagster-dlt shape).

One resource (`ChartlyResource`, whose `fetch(context)` yields the run's events), a
decorator (`@chartly_assets`) whose body the user writes, a translator users subclass,
blocking checks, a typed metadata set, `build_definitions` for a hand-written code location
and a Component for dg projects.
"""

from .asset_decorator import chartly_assets
from .assets import build_connector_asset
from .checks import build_profile_checks
from .components.connector_profiles.component import ConnectorProfilesComponent
from .definitions import build_definitions, load_profile, profiles_for_env
from .metadata import PartitionMetadata
from .resources import (
    ChartlyResource,
    EgressConfig,
    SecretProviderName,
    SecretsConfig,
    StorageConfig,
)
from .schedules import ProjectAssets
from .translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData

__all__ = [
    "ChartlyResource",
    "ConnectorProfileTranslator",
    "ConnectorProfileTranslatorData",
    "ConnectorProfilesComponent",
    "EgressConfig",
    "PartitionMetadata",
    "ProjectAssets",
    "SecretProviderName",
    "SecretsConfig",
    "StorageConfig",
    "build_connector_asset",
    "build_definitions",
    "build_profile_checks",
    "chartly_assets",
    "load_profile",
    "profiles_for_env",
]
