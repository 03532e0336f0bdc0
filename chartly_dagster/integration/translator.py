"""How a resolved profile becomes an `AssetSpec`: one overridable method, as in dagster-dlt.

Users who want other keys, groups or tags subclass `ConnectorProfileTranslator` and
override `get_asset_spec` (calling `super()` and `replace_attributes`), instead of forking
the asset factory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dagster import AssetKey, AssetSpec, PartitionsDefinition

from ..core.catalog import ResolvedProfile
from ..core.refs import format_ref
from . import metadata as md
from .partitions import partitions_def_for

KINDS = {"chartly", "http", "parquet"}
_TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")
_NOT_KEY_PART = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ConnectorProfileTranslatorData:
    """What the translator sees: one resolved profile and the env its asset runs in."""

    resolved: ResolvedProfile
    env: str


def tag_value(text: str) -> str:
    """Squeeze a value into Dagster's tag alphabet (letters, digits, '_', '.', '-'; <= 63)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]


def short_hash(digest: str) -> str:
    """`sha256:<hex>` as a tag: the first 32 hex digits (collisions are not a concern here)."""
    return digest.removeprefix("sha256:")[:32]


def group_name_for(tenant: str, project: str) -> str:
    """Group names must be Python-identifier-like; one group per tenant/project."""
    return _NOT_NAME.sub("_", f"{tenant}__{project}")


class ConnectorProfileTranslator:
    """Decides key, group, owners, description, kinds, tags and partitions of one asset."""

    def get_asset_key(self, data: ConnectorProfileTranslatorData) -> AssetKey:
        ref = data.resolved.ref
        return AssetKey([_NOT_KEY_PART.sub("_", part)
                         for part in (ref.tenant, ref.project, data.resolved.connector)])

    def get_partitions_def(self, data: ConnectorProfileTranslatorData) -> PartitionsDefinition:
        return partitions_def_for(data.resolved.spec.partitions)

    def get_pool(self, data: ConnectorProfileTranslatorData) -> str | None:
        """The Dagster concurrency pool the asset's step runs in: one pool per connector.

        Named `tenant/project/connector`, the same key as the runtime's per-process request
        budget, so with the pool limited to 1 (the instance's `default_limit`) only one
        process at a time fetches from the upstream and maxRequestsPerMinute holds across
        runs and backfills. Override to share one pool between connectors of one upstream
        (return the same name), or return None to opt out.
        """
        ref = data.resolved.ref
        return f"{ref.namespace}/{ref.name}"

    def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
        """The full spec; override this (and call super) to change any attribute."""
        resolved = data.resolved
        ref = resolved.ref
        meta = resolved.profile.metadata
        tags = {key: value for key, value in meta.labels.items()
                if _TAG_VALUE_RE.match(value) and "/" not in key}
        tags.update({
            md.TAG_ENV: tag_value(data.env),
            md.TAG_TENANT: tag_value(ref.tenant),
            md.TAG_PROJECT: tag_value(ref.project),
            md.TAG_CONNECTOR: tag_value(resolved.connector),
            md.TAG_CADENCE: resolved.spec.partitions.cadence,
            md.TAG_PAGINATION: resolved.spec.pagination.mode,
            md.TAG_PROFILE: tag_value(f"{resolved.connector}@{ref.version}"
                                      + (f"#{ref.variant}" if ref.variant else "")),
            md.TAG_RESOLVED_HASH_PREFIX: short_hash(resolved.hash),
        })
        description = (f"{meta.description}\n\n" if meta.description else "") + (
            f"Connector profile `{format_ref(ref)}` ({resolved.spec.pagination.mode} "
            f"pagination, {resolved.spec.partitions.cadence} windows), env `{data.env}`.")
        return AssetSpec(
            key=self.get_asset_key(data),
            group_name=group_name_for(ref.tenant, ref.project),
            owners=list(meta.owners),
            description=description,
            kinds=set(KINDS),
            tags=tags,
            metadata={md.DEF_PROFILE_REF: format_ref(ref),
                      md.DEF_RESOLVED_HASH: resolved.hash,
                      md.DEF_SOURCE_PATH: resolved.source_path},
            partitions_def=self.get_partitions_def(data),
        )
