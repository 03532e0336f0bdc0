"""`build_definitions`: every resolved profile under a folder as a Dagster code location.

One env per code location: the assets are the resolved profiles (base or variant) that
the env may run, so `#dev` variants become the dev deployment's assets and `#prod`
variants the prod one's, under the same asset keys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from dagster import (
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DefaultScheduleStatus,
    Definitions,
    PartitionsDefinition,
    in_process_executor,
)

from ..core.catalog import ProfileCatalog, ResolvedProfile
from ..core.refs import format_ref
from .assets import (
    DEFAULT_MAX_PARTITIONS_PER_RUN,
    EGRESS_KEY,
    SECRETS_KEY,
    STORAGE_KEY,
    backfill_policy_for,
    build_connector_asset,
)
from .checks import build_profile_checks
from .resources import ChartlyEgressResource, ChartlySecretsResource, ChartlyStorageResource
from .schedules import ProjectAssets, profile_schedule, project_jobs
from .summary import build_summary_asset
from .translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData
from .typed import TypedAssetSpecs, build_typed_layer

SUMMARY_NAME = "daily_summary"


def profiles_for_env(profiles_dir: str | Path, env: str) -> list[ResolvedProfile]:
    """Every resolved profile enabled for `env`; any broken profile fails the load loudly."""
    catalog = ProfileCatalog.load(profiles_dir)
    catalog.raise_for_issues()
    return [r for r in catalog.resolve_all() if env in r.spec.envs]


def _projects(assets: Sequence[tuple[ResolvedProfile, AssetsDefinition]]
              ) -> list[ProjectAssets]:
    grouped: dict[tuple[str, PartitionsDefinition], list[AssetKey]] = defaultdict(list)
    cadence: dict[tuple[str, PartitionsDefinition], str] = {}
    for resolved, asset_def in assets:
        spec = next(iter(asset_def.specs))
        group = spec.group_name or "default"
        part = spec.partitions_def
        assert part is not None  # build_connector_asset refuses unpartitioned specs
        grouped[(group, part)].append(spec.key)
        cadence[(group, part)] = resolved.spec.partitions.cadence
    return [ProjectAssets(group, cadence[(group, part)], part, tuple(keys))
            for (group, part), keys in grouped.items()]


def _with_summaries(projects: list[ProjectAssets], backfill_policy: BackfillPolicy
                    ) -> tuple[list[ProjectAssets], list[AssetsDefinition]]:
    """A daily summary for each project's daily assets, put into that project's job.

    It reads the typed assets when they are built (`downstream`), else the connector assets.
    """
    out, summaries = [], []
    for project in projects:
        if project.cadence != "daily":
            out.append(project)
            continue
        prefix = project.keys[0].path[:-1]
        key = AssetKey([*prefix, SUMMARY_NAME])
        summaries.append(build_summary_asset(key, project.downstream or project.keys,
                                             project.partitions_def, project.group_name,
                                             backfill_policy))
        out.append(ProjectAssets(project.group_name, project.cadence, project.partitions_def,
                                 project.keys, (*project.downstream, key)))
    return out, summaries


def build_definitions(profiles_dir: str | Path, *, env: str = "dev",
                      translator: ConnectorProfileTranslator | None = None,
                      max_partitions_per_run: int | None = DEFAULT_MAX_PARTITIONS_PER_RUN,
                      storage: ChartlyStorageResource | None = None,
                      secrets: ChartlySecretsResource | None = None,
                      egress: ChartlyEgressResource | None = None,
                      summaries: bool = True, schedules: bool = True, typed: bool = True,
                      schedule_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
                      ) -> Definitions:
    """Assets, checks, jobs, schedules and resources for every profile `env` may run.

    `max_partitions_per_run` bounds how many windows one backfill run fetches (None: any
    range in one run, which `dagster asset materialize --partition-range` requires).
    Schedules start stopped, so loading a code location never starts fetching by itself.
    `typed` adds a typed asset (and its drift check) downstream of each connector asset.
    """
    root = Path(profiles_dir)
    resolved_profiles = profiles_for_env(root, env)
    built: list[tuple[ResolvedProfile, AssetsDefinition]] = []
    seen: dict[AssetKey, ResolvedProfile] = {}
    checks = []
    typed_assets: list[AssetsDefinition] = []
    typed_keys: dict[AssetKey, AssetKey] = {}
    for resolved in resolved_profiles:
        asset_def = build_connector_asset(resolved, env=env, translator=translator,
                                          max_partitions_per_run=max_partitions_per_run)
        spec = next(iter(asset_def.specs))
        if spec.key in seen:
            raise ValueError(
                f"{format_ref(resolved.ref)} and {format_ref(seen[spec.key].ref)} both map to "
                f"asset {spec.key.to_user_string()} in env {env!r}; enable only one per env")
        seen[spec.key] = resolved
        built.append((resolved, asset_def))
        assert spec.partitions_def is not None
        checks.extend(build_profile_checks(resolved, spec.key, spec.partitions_def,
                                           root.resolve().parent))
        if typed:
            typed_spec = (translator or ConnectorProfileTranslator()).get_typed_asset_spec(
                ConnectorProfileTranslatorData(resolved, env), spec)
            typed_def, drift_check = build_typed_layer(
                TypedAssetSpecs(resolved, spec, typed_spec),
                backfill_policy_for(max_partitions_per_run))
            typed_assets.append(typed_def)
            checks.append(drift_check)
            typed_keys[spec.key] = typed_spec.key
    projects = [replace(p, downstream=tuple(typed_keys[k] for k in p.keys if k in typed_keys))
                for p in _projects(built)]
    extra_assets: list[AssetsDefinition] = []
    if summaries:
        projects, extra_assets = _with_summaries(
            projects, backfill_policy_for(max_partitions_per_run))
    jobs = list(project_jobs(projects))
    schedule_defs = []
    if schedules:
        for key in seen:
            job, schedule = profile_schedule(
                key, default_status=schedule_status,
                downstream=(typed_keys[key],) if key in typed_keys else ())
            jobs.append(job)
            schedule_defs.append(schedule)
    return Definitions(
        assets=[a for _, a in built] + typed_assets + extra_assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedule_defs,
        resources={
            STORAGE_KEY: storage or ChartlyStorageResource(),
            SECRETS_KEY: secrets or ChartlySecretsResource(),
            EGRESS_KEY: egress or ChartlyEgressResource(env=env),
        },
        executor=in_process_executor,
    )
