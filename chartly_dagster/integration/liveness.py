"""Runs whose worker died: notice them, mark them failed, free their connector pool slots.

A run worker killed without a word (OOM kill, SIGKILL, reboot) leaves its run STARTED and
the connector's pool slot claimed, so every later run of that connector waits for a slot
that is never given back. Dagster's run monitoring notices dead workers only through a run
launcher with a health check (the k8s launcher has one; the default local launcher has
none), so this module does it for workers on this host:

- `with_worker_identity` wraps an executor so the run worker writes who it is (host, boot,
  pid, process start time) into the run's tags before any step claims a pool slot;
- `reap_dead_runs` fails each STARTED run whose recorded worker is gone from this host and
  frees the slots of runs that ended without giving theirs back;
- `run_liveness_sensor` calls it from the daemon every minute, and
  `python -m chartly_dagster.integration.reap` (see that module) calls it at once.

A worker is judged only on the host (host name, and pid namespace: the container) that
recorded it, and judged dead only when that process is certainly gone: its pid is free,
belongs to a process started at another time (pid reuse), is a zombie, or the host has
rebooted since. Anything else counts as alive, so host names must differ between machines
sharing one instance.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    ExecutorDefinition,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    in_process_executor,
    sensor,
)
from dagster import Executor as DagsterExecutor

WORKER_HOST_TAG = "chartly/worker_host"
WORKER_BOOT_TAG = "chartly/worker_boot_id"
WORKER_PID_TAG = "chartly/worker_pid"
WORKER_PID_NS_TAG = "chartly/worker_pid_namespace"
WORKER_START_TAG = "chartly/worker_start_ticks"
#: the run the worker recorded itself for: a re-executed run starts with its parent's tags
WORKER_RUN_TAG = "chartly/worker_run_id"
LIVENESS_SENSOR_NAME = "chartly_run_liveness"
#: how often the daemon looks; a dead worker's run is failed within about this long
LIVENESS_INTERVAL_SECONDS = 60

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys" / "kernel" / "random" / "boot_id"


def _boot_id() -> str:
    """The kernel's id for this boot ("" where the OS does not expose one)."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    """This process's pid namespace, e.g. "pid:[4026531836]" ("" without /proc).

    Containers on one kernel share its boot id (and, with host networking, its host name)
    but number their processes apart: a pid means something only inside its namespace.
    """
    try:
        return os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessState:
    """What this host knows about one pid right now."""

    exists: bool
    #: start time in clock ticks since boot (/proc/<pid>/stat field 22); None without /proc
    start_ticks: int | None = None
    zombie: bool = False


def probe_process(pid: int) -> ProcessState:
    """The process holding `pid` on this host, read from /proc (or `kill -0` without it)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return ProcessState(exists=False)
    except OSError:
        stat = ""
    if stat:
        # the command name (field 2) may hold spaces and parentheses: split after the last ")"
        fields = stat[stat.rfind(")") + 2:].split()
        return ProcessState(exists=True, start_ticks=int(fields[19]),
                            zombie=fields[0] in ("Z", "X"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ProcessState(exists=False)
    except PermissionError:
        pass  # someone else's process: it exists
    return ProcessState(exists=True)


@dataclass(frozen=True)
class WorkerIdentity:
    """A run worker process, told apart from any later process that reuses its pid."""

    host: str
    boot_id: str
    pid: int
    start_ticks: int | None
    pid_namespace: str = ""

    @classmethod
    def current(cls) -> WorkerIdentity:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, probe_process(pid).start_ticks,
                   _pid_namespace())

    def to_tags(self, run_id: str) -> dict[str, str]:
        """The tags that say this process is `run_id`'s worker."""
        tags = {WORKER_RUN_TAG: run_id, WORKER_HOST_TAG: self.host,
                WORKER_BOOT_TAG: self.boot_id, WORKER_PID_TAG: str(self.pid),
                WORKER_PID_NS_TAG: self.pid_namespace}
        if self.start_ticks is not None:
            tags[WORKER_START_TAG] = str(self.start_ticks)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], run_id: str) -> WorkerIdentity | None:
        """The worker run `run_id` recorded, or None when it recorded none (or garbage).

        Worker tags copied from a parent run (re-execution, retry) name the parent and
        say nothing about this run's worker, which has not recorded itself yet.
        """
        if tags.get(WORKER_RUN_TAG) != run_id:
            return None
        host, pid = tags.get(WORKER_HOST_TAG), tags.get(WORKER_PID_TAG, "")
        start = tags.get(WORKER_START_TAG)
        if not host or not pid.isdigit() or (start is not None and not start.isdigit()):
            return None
        return cls(host, tags.get(WORKER_BOOT_TAG, ""), int(pid),
                   int(start) if start is not None else None, tags.get(WORKER_PID_NS_TAG, ""))


class WorkerState(StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    #: recorded on another host: not ours to judge
    ELSEWHERE = "elsewhere"
    #: no worker recorded (started before this check existed, or by other code)
    UNKNOWN = "unknown"


def worker_state(recorded: WorkerIdentity | None, here: WorkerIdentity) -> WorkerState:
    """Whether the recorded worker still runs, judged from `here` (this host's identity).

    Dead only when certain: same host name and the host rebooted since (boot ids differ),
    or same boot and pid namespace and the pid is free, a zombie, or a process started at
    another time.
    """
    if recorded is None:
        return WorkerState.UNKNOWN
    if recorded.host != here.host:
        return WorkerState.ELSEWHERE
    if recorded.boot_id != here.boot_id:
        # both known and different: this host restarted since, which ended every process
        both_known = bool(recorded.boot_id and here.boot_id)
        return WorkerState.DEAD if both_known else WorkerState.UNKNOWN
    if recorded.pid_namespace != here.pid_namespace:
        # another container on this kernel (both known), or no way to tell
        both_known = bool(recorded.pid_namespace and here.pid_namespace)
        return WorkerState.ELSEWHERE if both_known else WorkerState.UNKNOWN
    process = probe_process(recorded.pid)
    if not process.exists or process.zombie:
        return WorkerState.DEAD
    if recorded.start_ticks is not None and process.start_ticks is not None:
        same = process.start_ticks == recorded.start_ticks
        return WorkerState.ALIVE if same else WorkerState.DEAD
    return WorkerState.ALIVE  # a live pid we cannot tell apart from the worker


class _IdentifiedExecutor(DagsterExecutor):
    """Records the worker in the run's tags, then executes exactly as the wrapped executor."""

    def __init__(self, inner: DagsterExecutor) -> None:
        self._inner = inner

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        # before any step runs, so before any pool slot is claimed
        run_id = plan_context.run_id
        plan_context.instance.add_run_tags(run_id, WorkerIdentity.current().to_tags(run_id))
        yield from self._inner.execute(plan_context, execution_plan)


def with_worker_identity(executor_def: ExecutorDefinition) -> ExecutorDefinition:
    """`executor_def` (same name and config) whose runs record their worker process."""
    inner_fn = executor_def.executor_creation_fn
    if inner_fn is None:
        raise ValueError(f"executor {executor_def.name!r} has no creation function to wrap")
    return ExecutorDefinition(
        name=executor_def.name, config_schema=executor_def.config_schema,
        requirements=executor_def.get_requirements,
        executor_creation_fn=lambda init_context: _IdentifiedExecutor(inner_fn(init_context)),
        description=executor_def.description)


#: the in-process executor every chartly job uses, with its worker recorded
identified_in_process_executor = with_worker_identity(in_process_executor)


class RunAction(StrEnum):
    NONE = ""
    #: STARTED, worker gone: marked failed and its slots freed
    FAILED = "failed"
    #: had ended but still held slots: freed
    SLOTS_FREED = "slots_freed"
    WOULD_FAIL = "would_fail"  # dry run
    WOULD_FREE_SLOTS = "would_free_slots"  # dry run


_DESCRIPTIONS = {
    RunAction.FAILED: "worker gone: marked failed, pool slots freed",
    RunAction.SLOTS_FREED: "run had ended: its pool slots freed",
    RunAction.WOULD_FAIL: "worker gone: would be marked failed, pool slots freed",
    RunAction.WOULD_FREE_SLOTS: "run had ended: its pool slots would be freed",
}


@dataclass(frozen=True)
class RunVerdict:
    """What the check found for one run and what it did about it."""

    run_id: str
    job_name: str
    state: WorkerState
    action: RunAction
    worker: WorkerIdentity | None

    def describe(self) -> str:
        who = (f"pid {self.worker.pid} on {self.worker.host}" if self.worker
               else "no recorded worker")
        what = _DESCRIPTIONS.get(self.action, f"worker {self.state.value}: left alone")
        return f"{self.run_id} ({self.job_name}, {who}): {what}"


def _failure_message(worker: WorkerIdentity) -> str:
    return (f"The run worker (pid {worker.pid} on {worker.host}) is gone: killed or its host "
            "restarted. Marked failed and its pool slots freed by chartly's run liveness "
            "check; re-execute from failure to resume the windows it left.")


def reap_dead_runs(instance: DagsterInstance, *, here: WorkerIdentity | None = None,
                   dry_run: bool = False) -> list[RunVerdict]:
    """Fail every STARTED run whose worker on this host is gone and free its pool slots;
    free the slots still held by runs that already ended (e.g. marked failed by hand).

    Safe to run anywhere, any time, from several places at once: runs recorded by another
    host and live workers are left alone, and freeing slots is idempotent.
    """
    here = here or WorkerIdentity.current()
    verdicts = []
    started = instance.get_run_records(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    for record in started:
        run = record.dagster_run
        worker = WorkerIdentity.from_tags(run.tags, run.run_id)
        state = worker_state(worker, here)
        action = RunAction.WOULD_FAIL if state is WorkerState.DEAD and dry_run else RunAction.NONE
        if state is WorkerState.DEAD and not dry_run:
            # re-read: a run that finished between the listing and the probe is not touched
            # (a dead worker can no longer change it, so the status read now is final)
            fresh = instance.get_run_by_id(run.run_id)
            if fresh is not None and fresh.status == DagsterRunStatus.STARTED:
                assert worker is not None  # DEAD is only judged from a recorded worker
                instance.report_run_failed(fresh, _failure_message(worker))
                instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
                action = RunAction.FAILED
        verdicts.append(RunVerdict(run.run_id, run.job_name, state, action, worker))
    verdicts.extend(_free_slots_of_ended_runs(instance, here, dry_run=dry_run))
    return verdicts


def _free_slots_of_ended_runs(instance: DagsterInstance, here: WorkerIdentity, *,
                              dry_run: bool) -> list[RunVerdict]:
    """`report_run_failed` and a terminate from the UI leave slots claimed: give them back."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = sorted(storage.get_concurrency_run_ids())
    if not holders:
        return []
    ended = instance.get_run_records(filters=RunsFilter(
        run_ids=holders, statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                   DagsterRunStatus.CANCELED]))
    out = []
    for record in ended:
        run = record.dagster_run
        if not dry_run:
            storage.free_concurrency_slots_for_run(run.run_id)
        worker = WorkerIdentity.from_tags(run.tags, run.run_id)
        out.append(RunVerdict(run.run_id, run.job_name, worker_state(worker, here),
                              RunAction.WOULD_FREE_SLOTS if dry_run else RunAction.SLOTS_FREED,
                              worker))
    return out


@sensor(name=LIVENESS_SENSOR_NAME, minimum_interval_seconds=LIVENESS_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Fails runs whose worker process on this host died (OOM kill, SIGKILL, "
                    "reboot) and frees the connector pool slots they held. Requests no runs.")
def run_liveness_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Runs in the daemon, so a dead worker's slot is back within about a minute."""
    acted = [v for v in reap_dead_runs(context.instance) if v.action]
    for verdict in acted:
        context.log.warning(verdict.describe())
    return SkipReason(f"{len(acted)} run(s) cleaned up" if acted else "nothing to clean up")
