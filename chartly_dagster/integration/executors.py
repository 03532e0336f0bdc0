"""Which executor runs which job, so every connector of a run moves at its upstream's pace.

A profile's own job (its schedule, a range of that one asset) runs in process: its windows
already run side by side on threads inside its one step, sharing the connector's token
bucket and connection pool. A job of several connectors (a project job, a backfill of
several assets launched from the UI) runs each step in a process of its own, so the
connectors proceed side by side instead of one after another; each connector's pool still
admits one of its steps at a time.

The step processes fork from a server that has already imported Dagster, chartly and the
job's own module, so a step starts in a fraction of a second instead of re-importing
everything (a 4-connector, 5-day project run on 2 cores against the loopback sandbox:
21.4 s this way, 22.5 s in process, 32.8 s with freshly spawned processes). Where steps
cannot run in other processes (an ephemeral instance, a job that cannot be reconstructed
in another process) the same job runs in process instead of failing.
"""

from __future__ import annotations

import multiprocessing

from dagster import Executor as DagsterExecutor
from dagster import (
    ExecutorDefinition,
    InitExecutorContext,
    in_process_executor,
    multiprocess_executor,
)

from ._compat import ReconstructableJob
from .liveness import with_worker_identity

#: steps of one run in flight at once unless the run config says otherwise
DEFAULT_MAX_CONCURRENT_STEPS = 4
#: imported once by the fork server, so each step process starts with them loaded
PRELOAD_MODULES = ("dagster", "chartly_dagster.integration")
SIDE_BY_SIDE_EXECUTOR_NAME = "chartly_side_by_side"


def _can_use_processes(init_context: InitExecutorContext) -> bool:
    """What Dagster's multiprocess executor needs: a stored instance other processes can
    reach and a job they can rebuild."""
    return (not init_context.instance.is_ephemeral
            and isinstance(init_context.job, ReconstructableJob))


def _start_method(job: ReconstructableJob) -> dict[str, dict[str, list[str]]]:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return {"spawn": {}}
    module = job.get_module()  # a module code location: its definitions come preloaded
    preload = [*PRELOAD_MODULES, *([module] if module else [])]
    return {"forkserver": {"preload_modules": preload}}


def _create(init_context: InitExecutorContext) -> DagsterExecutor:
    if not _can_use_processes(init_context):
        # the multiprocess config carries everything the in-process executor reads
        return in_process_executor.executor_creation_fn(init_context)  # type: ignore[misc]
    assert isinstance(init_context.job, ReconstructableJob)
    config = dict(init_context.executor_config)
    config["max_concurrent"] = config.get("max_concurrent") or DEFAULT_MAX_CONCURRENT_STEPS
    config["start_method"] = config.get("start_method") or _start_method(init_context.job)
    return multiprocess_executor.executor_creation_fn(  # type: ignore[misc]
        init_context._replace(executor_config=config))


#: the default executor of jobs spanning several connectors, with its worker recorded
side_by_side_executor = with_worker_identity(ExecutorDefinition(
    name=SIDE_BY_SIDE_EXECUTOR_NAME,
    config_schema=multiprocess_executor.config_schema,
    executor_creation_fn=_create,
    description=(
        "Each step in its own process, forked from a server with Dagster and chartly "
        f"preloaded, up to {DEFAULT_MAX_CONCURRENT_STEPS} at once (run config "
        "`max_concurrent`), so several connectors proceed side by side; in process where "
        "the instance is ephemeral or the job cannot be rebuilt in another process.")))
