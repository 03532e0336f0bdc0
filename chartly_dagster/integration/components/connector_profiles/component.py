"""`ConnectorProfilesComponent`: a folder of connector profiles as a dg component.

A `defs.yaml` with `type: chartly_dagster.integration.ConnectorProfilesComponent` and a
few attributes is all a dg project writes; the component calls `build_definitions` (built on
`@chartly_assets`), so a component and a hand-written code location define exactly the
same assets. `translation` sets keys, groups, tags and the rest of each spec from YAML,
with the profile's fields as template variables, without a subclass:

    attributes:
      translation:
        key: "raw/{{ connector }}"
        group_name: raw
        tags: {team: "{{ project }}"}
"""

# No `from __future__ import annotations`: dagster derives the component's YAML schema from
# the dataclass field types, which must be real types, not strings.
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from dagster import (
    AssetSpec,
    Component,
    ComponentLoadContext,
    Definitions,
    Resolvable,
    scaffold_with,
)
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver

from ...definitions import build_definitions
from ...resources import ChartlyResource, SecretsConfig, StorageConfig
from ...translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData
from .scaffolder import ConnectorProfilesScaffolder


class _ComponentTranslator(ConnectorProfileTranslator):
    """Routes spec decisions through the component, so subclassing the component works too."""

    def __init__(self, component: "ConnectorProfilesComponent") -> None:
        self._component = component

    def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
        spec = self._component.get_asset_spec(data)
        translation = self._component.translation
        return translation(spec, data) if translation is not None else spec


def _template_vars(data: ConnectorProfileTranslatorData) -> dict[str, object]:
    """What a `translation` template may use: `{{ connector }}`, `{{ profile.spec... }}`."""
    ref = data.resolved.ref
    return {"profile": data.resolved, "connector": data.resolved.connector,
            "tenant": ref.tenant, "project": ref.project, "version": ref.version,
            "env": data.env}


@scaffold_with(ConnectorProfilesScaffolder)
@dataclass
class ConnectorProfilesComponent(Component, Resolvable):
    """Every connector profile under `profiles_dir` as a partitioned, checked asset.

    Attributes:
        profiles_dir: Profiles folder, relative to this component's folder.
        env: The env whose resolved profiles (base or variant) become assets.
        max_partitions_per_run: Windows per backfill run; null (default) for one run per
            range.
        storage_root: Folder or fsspec URL for the Parquet files (default: DAGSTER_HOME).
        staging_root: Folder for windows in flight (default: DAGSTER_HOME).
        secrets_dir_env_var: Name of the environment variable holding the mounted secrets
            folder; only the name is configured, so the UI never shows a path or value. An
            unset variable means no folder (CHARTLY_SECRET_* variables still work).
        schedules: Build a (stopped) schedule per profile.
        translation: Asset attributes (key, key_prefix, group_name, tags, owners, ...) for
            every connector asset; templates see `profile`, `connector`, `tenant`,
            `project`, `version`, `env` and the default `spec`.
    """

    profiles_dir: str = "profiles"
    env: str = "dev"
    max_partitions_per_run: int | None = None
    storage_root: str | None = None
    staging_root: str | None = None
    secrets_dir_env_var: str | None = "CHARTLY_SECRETS_DIR"
    schedules: bool = True
    translation: Annotated[
        TranslationFn[ConnectorProfileTranslatorData],
        TranslationFnResolver[ConnectorProfileTranslatorData](_template_vars),
    ] | None = None

    def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
        """Override in a subclass to change keys, groups or tags of every asset."""
        return ConnectorProfileTranslator().get_asset_spec(data)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        resource = ChartlyResource(
            env=self.env,
            storage=StorageConfig(root=self.storage_root, staging_root=self.staging_root),
            secrets=SecretsConfig(secrets_dir_env_var=self.secrets_dir_env_var))
        return build_definitions(
            Path(context.path) / self.profiles_dir, resource=resource,
            translator=_ComponentTranslator(self),
            max_partitions_per_run=self.max_partitions_per_run, schedules=self.schedules)
