"""Jobs and schedules: a job per project (per partitioning), a schedule per profile.

A profile's own job runs in process: its steps (the asset, then its checks) run one after
another anyway, and a Python process per step would cost more than the work itself. A
project job takes the executor the code location chooses (connectors side by side).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    ExecutorDefinition,
    PartitionsDefinition,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from ._compat import UnresolvedAssetJobDefinition
from .liveness import identified_in_process_executor

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class ProjectAssets:
    """The assets of one tenant/project that share one partitions definition."""

    group_name: str
    cadence: str
    partitions_def: PartitionsDefinition
    keys: tuple[AssetKey, ...]
    #: assets built on these (typed assets, a summary), run in the same job so the checks
    #: gate them
    downstream: tuple[AssetKey, ...] = ()


def job_name(*parts: str) -> str:
    return _NOT_NAME.sub("_", "__".join(parts))


def project_job(project: ProjectAssets, name: str,
                executor_def: ExecutorDefinition = identified_in_process_executor
                ) -> UnresolvedAssetJobDefinition:
    """Materializes the project's assets, their checks and the assets built on them.

    A Dagster run targets one partitions definition, so a project whose profiles differ in
    cadence gets one job per cadence.
    """
    return define_asset_job(name=name,
                            selection=AssetSelection.assets(*project.keys, *project.downstream),
                            executor_def=executor_def,
                            description=f"{project.group_name}: {len(project.keys)} "
                                        f"{project.cadence} connector asset(s) and checks")


def profile_schedule(key: AssetKey, *, default_status: DefaultScheduleStatus,
                     downstream: Sequence[AssetKey] = ()
                     ) -> tuple[UnresolvedAssetJobDefinition, ScheduleDefinition]:
    """A job for one profile's asset (and `downstream`, its typed asset) and a schedule
    requesting its latest completed window.

    The cron and time zone come from the partitions definition, so a custom-cron profile
    is scheduled exactly on its window boundaries.
    """
    name = job_name(*key.path)
    job = define_asset_job(name=f"{name}_job",
                           selection=AssetSelection.assets(key, *downstream),
                           executor_def=identified_in_process_executor)
    schedule = build_schedule_from_partitioned_job(job, name=f"{name}_schedule",
                                                   default_status=default_status)
    return job, schedule


def project_jobs(projects: Sequence[ProjectAssets],
                 executor_def: ExecutorDefinition = identified_in_process_executor
                 ) -> list[UnresolvedAssetJobDefinition]:
    """One job per project, suffixed by cadence only where a project needs several."""
    per_group: dict[str, int] = {}
    for project in projects:
        per_group[project.group_name] = per_group.get(project.group_name, 0) + 1
    jobs = []
    taken: set[str] = set()
    for project in projects:
        name = project.group_name if per_group[project.group_name] == 1 else job_name(
            project.group_name, project.cadence)
        if name in taken:  # two partitionings of one cadence (e.g. different start dates)
            name = f"{name}_{len(taken)}"
        taken.add(name)
        jobs.append(project_job(project, name, executor_def))
    return jobs
