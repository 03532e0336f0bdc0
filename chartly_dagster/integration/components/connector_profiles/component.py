"""`ConnectorProfilesComponent`: a folder of connector profiles as a dg component.

A `defs.yaml` with `type: chartly_dagster.integration.ConnectorProfilesComponent` and a
few attributes is all a dg project writes; the component calls `build_definitions`, so a
component and a hand-written code location define exactly the same assets.
"""

# No `from __future__ import annotations`: dagster derives the component's YAML schema from
# the dataclass field types, which must be real types, not strings.
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetSpec,
    Component,
    ComponentLoadContext,
    Definitions,
    EnvVar,
    Resolvable,
    scaffold_with,
)

from ...assets import DEFAULT_MAX_PARTITIONS_PER_RUN
from ...definitions import build_definitions
from ...resources import ChartlyEgressResource, ChartlySecretsResource, ChartlyStorageResource
from ...translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData
from .scaffolder import ConnectorProfilesScaffolder


class _ComponentTranslator(ConnectorProfileTranslator):
    """Routes spec decisions through the component, so subclassing the component works too."""

    def __init__(self, component: "ConnectorProfilesComponent") -> None:
        self._component = component

    def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
        return self._component.get_asset_spec(data)


@scaffold_with(ConnectorProfilesScaffolder)
@dataclass
class ConnectorProfilesComponent(Component, Resolvable):
    """Every connector profile under `profiles_dir` as a partitioned, checked asset.

    Attributes:
        profiles_dir: Profiles folder, relative to this component's folder.
        env: The env whose resolved profiles (base or variant) become assets.
        max_partitions_per_run: Windows per backfill run; null for one run per range.
        storage_root: Folder or fsspec URL for the Parquet files (default: DAGSTER_HOME).
        secrets_dir_env_var: Name of the environment variable holding the mounted secrets
            folder; only the name is configured, so the UI never shows a path or value.
        schedules: Build a (stopped) schedule per profile.
    """

    profiles_dir: str = "profiles"
    env: str = "dev"
    max_partitions_per_run: int | None = DEFAULT_MAX_PARTITIONS_PER_RUN
    storage_root: str | None = None
    secrets_dir_env_var: str | None = None
    schedules: bool = True

    def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
        """Override in a subclass to change keys, groups or tags of every asset."""
        return ConnectorProfileTranslator().get_asset_spec(data)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        secrets_dir = EnvVar(self.secrets_dir_env_var) if self.secrets_dir_env_var else None
        return build_definitions(
            Path(context.path) / self.profiles_dir, env=self.env,
            translator=_ComponentTranslator(self),
            max_partitions_per_run=self.max_partitions_per_run,
            storage=ChartlyStorageResource(root=self.storage_root),
            secrets=ChartlySecretsResource(secrets_dir=secrets_dir),
            egress=ChartlyEgressResource(env=self.env), schedules=self.schedules)
