"""`build_definitions`: every resolved profile under a folder as a Dagster code location.

One env per code location: the assets are the resolved profiles (base or variant) that
the env may run, so `#dev` variants become the dev deployment's assets and `#prod`
variants the prod one's, under the same asset keys.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from dagster import (
    AssetKey,
    AssetsDefinition,
    DefaultScheduleStatus,
    Definitions,
    ExecutorDefinition,
    PartitionsDefinition,
    SensorDefinition,
    get_dagster_logger,
)

from ..core.catalog import ProfileCatalog, ResolvedProfile
from ..core.errors import PreconditionFailed
from ..core.refs import format_ref, parse_ref
from .asset_decorator import backfill_policy_for
from .assets import build_connector_asset
from .checks import build_profile_checks
from .executors import side_by_side_executor
from .liveness import run_liveness_sensor, with_worker_identity
from .resources import RESOURCE_KEY, ChartlyResource
from .schedules import ProjectAssets, profile_schedule, project_jobs
from .translator import ConnectorProfileTranslator, ConnectorProfileTranslatorData
from .typed import TypedAssetSpecs, build_typed_layer

#: Assets a code location builds on one project's connector assets (e.g. a summary); they
#: join that project's job, so the connectors' blocking checks gate them in the same run.
DownstreamFactory = Callable[[ProjectAssets], Sequence[AssetsDefinition]]


def profiles_for_env(profiles_dir: str | Path, env: str) -> list[ResolvedProfile]:
    """Every resolved profile enabled for `env`; any broken profile fails the load loudly.

    A folder without profiles is an error and an env none of them enables is a warning
    naming the folder and the envs that are enabled: either would otherwise load as a
    code location with zero assets that `dg check defs` calls fine.
    """
    catalog = ProfileCatalog.load(profiles_dir)
    catalog.raise_for_issues()
    resolved = catalog.resolve_all()
    if not resolved:
        raise PreconditionFailed(
            f"profiles folder {str(profiles_dir)!r} holds no connector profile (*.yaml); "
            "write one with `chartly-tool profiles new NAME --pagination MODE`",
            field="profiles_dir")
    enabled = [r for r in resolved if env in r.spec.envs]
    if not enabled:
        offered = sorted({f"{format_ref(r.ref)} (envs: {', '.join(r.spec.envs)})"
                          for r in resolved})
        message = (f"no connector profile in {str(profiles_dir)!r} is enabled for env "
                   f"{env!r}, so it defines no assets; the profiles there are: "
                   f"{'; '.join(offered)}")
        # A Python warning for code that builds definitions, and Dagster's logger because
        # `dg check defs` / `dagster dev` load code locations where warnings are not shown.
        warnings.warn(message, UserWarning, stacklevel=2)
        get_dagster_logger().warning(message)
    return enabled


def load_profile(profiles_dir: str | Path, ref: str) -> ResolvedProfile:
    """One resolved profile by ref (`tenant/project::connector/name@version#variant`), the
    `profile=` of a hand-written `@chartly_assets`; a broken profile fails the load loudly."""
    catalog = ProfileCatalog.load(profiles_dir)
    catalog.raise_for_issues()
    return catalog.resolve(parse_ref(ref))


def _projects(assets: Sequence[tuple[ResolvedProfile, AssetsDefinition]]
              ) -> list[ProjectAssets]:
    grouped: dict[tuple[str, PartitionsDefinition], list[AssetKey]] = defaultdict(list)
    cadence: dict[tuple[str, PartitionsDefinition], str] = {}
    for resolved, asset_def in assets:
        spec = next(iter(asset_def.specs))
        group = spec.group_name or "default"
        part = spec.partitions_def
        assert part is not None  # @chartly_assets refuses unpartitioned specs
        grouped[(group, part)].append(spec.key)
        cadence[(group, part)] = resolved.spec.partitions.cadence
    return [ProjectAssets(group, cadence[(group, part)], part, tuple(keys))
            for (group, part), keys in grouped.items()]


def _with_downstream(projects: list[ProjectAssets], factory: DownstreamFactory
                     ) -> tuple[list[ProjectAssets], list[AssetsDefinition]]:
    out, extra = [], []
    for project in projects:
        built = list(factory(project))
        extra.extend(built)
        keys = tuple(key for asset_def in built for key in asset_def.keys)
        out.append(ProjectAssets(project.group_name, project.cadence, project.partitions_def,
                                 project.keys, project.downstream + keys))
    return out, extra


def _resource(env: str | None, resource: ChartlyResource | None) -> ChartlyResource:
    """The env is set once: on the resource, or as the shorthand `env=` that builds one."""
    if env is not None and resource is not None:
        raise ValueError("pass env= or resource=, not both: the resource's env decides "
                         "which profiles this code location runs")
    return resource or ChartlyResource(env=env or "dev")


def build_definitions(profiles_dir: str | Path, *, env: str | None = None,
                      resource: ChartlyResource | None = None,
                      translator: ConnectorProfileTranslator | None = None,
                      max_partitions_per_run: int | None = None,
                      downstream: DownstreamFactory | None = None,
                      typed: bool = True,
                      schedules: bool = True,
                      schedule_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
                      sensors: Sequence[SensorDefinition] = (),
                      executor: ExecutorDefinition | None = None,
                      ) -> Definitions:
    """Assets, checks, jobs, schedules and the resource for every profile the env may run.

    `env="dev"` is shorthand for `resource=ChartlyResource(env="dev")` (the default).
    A range of windows is one run unless `max_partitions_per_run` bounds it, as
    `dagster asset materialize --partition-range` needs. Schedules start stopped, so
    loading a code location never starts fetching by itself; the run liveness sensor (see
    `liveness`) starts running: it requests no runs, it fails runs whose worker died and
    frees the connector pool slots they held. `sensors` are added next to it.
    `typed` adds a typed asset (and its drift check) downstream of each connector asset,
    run in the project's and the profile's jobs; `downstream` assets see them in
    `ProjectAssets.downstream`.
    `executor` runs project jobs and asset backfills (wrapped so each run records its
    worker). The default, `side_by_side_executor`, runs each step in a process forked from
    a preloaded server, so the connectors of a project job or a multi-asset backfill proceed
    side by side, each at its own upstream's pace (see `executors`). A profile's own job
    always runs in process: its windows already run side by side inside its one step.
    """
    root = Path(profiles_dir)
    chartly = _resource(env, resource)
    # Every run records its worker, so the liveness sensor can judge it (see `liveness`).
    executor = (side_by_side_executor if executor is None
                else with_worker_identity(executor))
    built: list[tuple[ResolvedProfile, AssetsDefinition]] = []
    seen: dict[AssetKey, ResolvedProfile] = {}
    checks = []
    typed_assets: list[AssetsDefinition] = []
    typed_keys: dict[AssetKey, AssetKey] = {}
    for resolved in profiles_for_env(root, chartly.env):
        asset_def = build_connector_asset(resolved, env=chartly.env, translator=translator,
                                          max_partitions_per_run=max_partitions_per_run)
        spec = next(iter(asset_def.specs))
        if spec.key in seen:
            raise ValueError(
                f"{format_ref(resolved.ref)} and {format_ref(seen[spec.key].ref)} both map to "
                f"asset {spec.key.to_user_string()} in env {chartly.env!r}; enable only one "
                f"per env")
        seen[spec.key] = resolved
        built.append((resolved, asset_def))
        assert spec.partitions_def is not None
        checks.extend(build_profile_checks(resolved, spec.key, spec.partitions_def,
                                           root.resolve().parent))
        if typed:
            typed_spec = (translator or ConnectorProfileTranslator()).get_typed_asset_spec(
                ConnectorProfileTranslatorData(resolved, chartly.env), spec)
            typed_def, drift_check = build_typed_layer(
                TypedAssetSpecs(resolved, spec, typed_spec),
                backfill_policy_for(max_partitions_per_run))
            typed_assets.append(typed_def)
            checks.append(drift_check)
            typed_keys[spec.key] = typed_spec.key
    projects = [replace(p, downstream=tuple(typed_keys[k] for k in p.keys if k in typed_keys))
                for p in _projects(built)]
    extra_assets: list[AssetsDefinition] = []
    if downstream is not None:
        projects, extra_assets = _with_downstream(projects, downstream)
    jobs = list(project_jobs(projects, executor))
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
        sensors=[run_liveness_sensor, *sensors],
        resources={RESOURCE_KEY: chartly},
        executor=executor,
    )
