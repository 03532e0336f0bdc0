"""Dagster integration for chartly connector profiles (the dagster-sling/dagster-dlt shape).

A resource per concern, a translator users subclass, an asset factory, blocking checks,
`build_definitions` for a hand-written code location and a Component for dg projects.
"""

from .assets import build_connector_asset
from .checks import build_profile_checks
from .components.connector_profiles.component import ConnectorProfilesComponent
from .definitions import build_definitions
from .resources import (
    ChartlyEgressResource,
    ChartlySecretsResource,
    ChartlyStorageResource,
    SecretProviderName,
)
from .translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData

__all__ = [
    "ChartlyEgressResource",
    "ChartlySecretsResource",
    "ChartlyStorageResource",
    "ConnectorProfileTranslator",
    "ConnectorProfileTranslatorData",
    "ConnectorProfilesComponent",
    "SecretProviderName",
    "build_connector_asset",
    "build_definitions",
    "build_profile_checks",
]
