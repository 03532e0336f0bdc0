"""A run whose worker is SIGKILLed mid-fetch does not block its connector.

The killed run holds the connector's pool slot (limit 1, the shipped dagster_home) and
stays STARTED; the liveness check (the sensor in the daemon, or the reap command) must fail
it and free the slot, after which the next run of that connector proceeds and the killed
run re-executes from failure. The kill is certain: the upstream holds every response from
the window's second page on, and the worker is killed only after that page was requested,
its run records its worker and its step holds the slot.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ReexecutionOptions,
    asset,
    execute_job,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.instance.config import dagster_instance_config

from chartly_dagster.integration.liveness import (
    LIVENESS_SENSOR_NAME,
    WORKER_HOST_TAG,
    WORKER_PID_TAG,
    WORKER_RUN_TAG,
    WORKER_START_TAG,
    RunAction,
    WorkerIdentity,
    WorkerState,
    probe_process,
    reap_dead_runs,
    worker_state,
)
from chartly_dagster.sandbox import Fault, Sandbox
from tests.support.paths import REPO
from tests.support.secrets import SECRET_ENV

ORDERS = "tenant-demo/proj-sales/orders"
ORDERS_KEY = AssetKey(["tenant-demo", "proj-sales", "orders"])
POOL = "tenant-demo/proj-sales/orders"  # ConnectorProfileTranslator.get_pool
DEFS = """\
from chartly_dagster.integration import build_definitions

defs = build_definitions({profiles!r}, env="dev", schedules=False)
"""
HOLD_MS = 600_000  # longer than any test: the held request never answers by itself
WAIT_S = 240  # generous bound for a loaded machine; every wait ends on a condition


def _wait_for(what: str, condition: Callable[[], object], proc: subprocess.Popen | None = None
              ) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended before {what}: {out[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _claimed_by(instance: DagsterInstance, run_id: str) -> bool:
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return any(slot.run_id == run_id for slot in info.claimed_slots)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The shipped embedded instance (pool limit 1) in a temp folder, storage created once."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)):
        pass
    return home


def _stop(proc: subprocess.Popen) -> None:
    """End a process group we started: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts, each in its own session; none outlives the test."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        _stop(proc)


def _reap_with_daemon(env: dict, defs_file: Path, instance: DagsterInstance, run_id: str,
                      started: list[subprocess.Popen]) -> None:
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-f", str(defs_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    started.append(daemon)
    _wait_for("the sensor to fail the killed run",
              lambda: instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE,
              daemon)
    _stop(daemon)
    state = next(s for s in instance.all_instigator_state()
                 if s.instigator_name == LIVENESS_SENSOR_NAME)
    assert instance.get_ticks(state.instigator_origin_id, state.selector_id), \
        "the liveness sensor never ticked"


def _reap_with_command(env: dict, defs_file: Path, instance: DagsterInstance, run_id: str,
                       started: list[subprocess.Popen]) -> None:
    command = [sys.executable, "-m", "chartly_dagster.integration.reap"]
    dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=WAIT_S)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "worker gone: would be marked failed" in dry.stdout, dry.stdout
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{run_id} (__ASSET_JOB, pid " in done.stdout, done.stdout
    assert "worker gone: marked failed, pool slots freed" in done.stdout, done.stdout


@pytest.mark.parametrize("reaper", [_reap_with_daemon, _reap_with_command],
                         ids=["daemon-sensor", "reap-command"])
def test_sigkilled_run_frees_its_connector(
        reaper: Callable, home: Path, sandbox: Sandbox, sandbox_profiles: Path,
        secrets_env: dict, tmp_path: Path, started: list[subprocess.Popen]) -> None:
    defs_file = tmp_path / "defs.py"
    defs_file.write_text(DEFS.format(profiles=str(sandbox_profiles)), encoding="utf-8")
    env = {**os.environ, **SECRET_ENV, "DAGSTER_HOME": str(home)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    sandbox.faults.add(Fault("slow", endpoint="/v2/orders", on_request=2, times=None,
                             delay_ms=HOLD_MS))
    worker = subprocess.Popen(
        [dagster, "asset", "materialize", "-f", str(defs_file), "--select", ORDERS,
         "--partition", "2026-01-10"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    started.append(worker)
    with DagsterInstance.from_config(str(home)) as instance:
        _wait_for("the second page to be requested (and held)",
                  lambda: sandbox.request_count("/v2/orders") >= 2, worker)
        run = instance.get_run_records()[0].dagster_run
        assert run.status == DagsterRunStatus.STARTED
        assert WorkerIdentity.from_tags(run.tags, run.run_id).pid == worker.pid
        assert _claimed_by(instance, run.run_id)

        # a live worker is never judged dead, by any check
        verdicts = reap_dead_runs(instance)
        assert [(v.run_id, v.state, v.action) for v in verdicts] == [
            (run.run_id, WorkerState.ALIVE, RunAction.NONE)]

        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        sandbox.faults.clear()  # the next runs get their pages at once
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        assert _claimed_by(instance, run.run_id)  # the blocked state issue 15 describes

        reaper(env, defs_file, instance, run.run_id, started)

        failed = instance.get_run_by_id(run.run_id)
        assert failed.status == DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_FAILURE).records
        assert "chartly's run liveness check" in failure[0].event_log_entry.dagster_event.message
        assert not _claimed_by(instance, run.run_id)

        # the next run of the connector gets the pool slot and finishes
        nxt = subprocess.run(
            [dagster, "asset", "materialize", "-f", str(defs_file), "--select", ORDERS,
             "--partition", "2026-01-11"],
            env=env, capture_output=True, text=True, timeout=WAIT_S)
        assert nxt.returncode == 0, nxt.stdout[-3000:] + nxt.stderr[-3000:]

        # and the killed run re-executes from failure
        # the job `dagster asset materialize` ran, from the same file
        recon = ReconstructableRepository.for_file(
            str(defs_file), "defs", working_directory=str(tmp_path)
        ).get_reconstructable_job(failed.job_name)
        with execute_job(recon, instance=instance, tags={"dagster/partition": "2026-01-10"},
                         reexecution_options=ReexecutionOptions.from_failure(
                             run.run_id, instance)) as again:
            assert again.success
        # the re-executed run names its own worker, not the killed parent's it inherited
        assert instance.get_run_by_id(again.run_id).tags[WORKER_RUN_TAG] == again.run_id
        for partition in ("2026-01-10", "2026-01-11"):
            assert instance.fetch_materializations(AssetRecordsFilter(
                asset_key=ORDERS_KEY, asset_partitions=[partition]), limit=1).records


# --- judging a worker: only certain deaths count -------------------------------------------

def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_a_live_worker_is_alive_and_a_killed_one_dead_even_as_a_zombie() -> None:
    here = WorkerIdentity.current()
    assert worker_state(here, here) == WorkerState.ALIVE
    assert WorkerIdentity.from_tags(here.to_tags("run-1"), "run-1") == here
    # a re-executed run starts with its parent's tags: they are not its worker
    assert WorkerIdentity.from_tags(here.to_tags("run-1"), "run-2") is None
    proc = _sleeper()
    try:
        child = replace(here, pid=proc.pid, start_ticks=probe_process(proc.pid).start_ticks)
        assert worker_state(child, here) == WorkerState.ALIVE
        proc.kill()
        _wait_for("the child to die", lambda: probe_process(proc.pid).zombie)
        assert worker_state(child, here) == WorkerState.DEAD  # not yet reaped by its parent
    finally:
        proc.kill()
        proc.wait()
    assert worker_state(child, here) == WorkerState.DEAD  # reaped: the pid is free


def test_a_reused_pid_or_a_rebooted_host_means_dead_another_host_is_not_judged() -> None:
    here = WorkerIdentity.current()
    assert here.start_ticks is not None and here.pid_namespace, "this test needs /proc"
    # this very process, recorded with another start time: the pid was reused since
    assert worker_state(replace(here, start_ticks=here.start_ticks + 1), here) == \
        WorkerState.DEAD
    assert worker_state(replace(here, boot_id="another-boot"), here) == WorkerState.DEAD
    assert worker_state(replace(here, host="other-host"), here) == \
        WorkerState.ELSEWHERE
    # another container on this kernel: its pids are not ours, even with our host name
    assert worker_state(replace(here, pid_namespace="pid:[1]", pid=2**22 + 1), here) == \
        WorkerState.ELSEWHERE
    # an unknown boot id or namespace on either side: no way to tell
    assert worker_state(replace(here, boot_id=""), here) == WorkerState.UNKNOWN
    assert worker_state(replace(here, pid_namespace=""), here) == WorkerState.UNKNOWN
    assert worker_state(None, here) == WorkerState.UNKNOWN


@pytest.mark.parametrize("tags", [
    {}, {WORKER_HOST_TAG: "h"}, {WORKER_HOST_TAG: "h", WORKER_PID_TAG: "12x"},
    {WORKER_HOST_TAG: "", WORKER_PID_TAG: "12"},
    {WORKER_HOST_TAG: "h", WORKER_PID_TAG: "12", WORKER_START_TAG: "-1"},
])
def test_runs_without_a_clear_worker_record_are_not_judged(tags: dict) -> None:
    assert WorkerIdentity.from_tags({WORKER_RUN_TAG: "r", **tags}, "r") is None


def test_slots_left_by_an_ended_run_are_freed(tmp_path: Path) -> None:
    @asset(pool=POOL)
    def pooled() -> None:
        return None

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert materialize([pooled], instance=instance).success
        run_id = instance.get_run_records()[0].dagster_run.run_id
        # as if the run had been marked failed by hand while its step held the slot
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, "pooled")
        assert _claimed_by(instance, run_id)
        dry = reap_dead_runs(instance, dry_run=True)
        assert [(v.run_id, v.action) for v in dry] == [(run_id, RunAction.WOULD_FREE_SLOTS)]
        assert _claimed_by(instance, run_id)
        assert [(v.run_id, v.action) for v in reap_dead_runs(instance)] == [
            (run_id, RunAction.SLOTS_FREED)]
        assert not _claimed_by(instance, run_id)


# --- the command and the shipped instance files ---------------------------------------------

@pytest.mark.parametrize(("args", "home", "code", "says"), [
    ([], None, 3, "DAGSTER_HOME must name the instance folder"),
    ([], "missing", 3, "DAGSTER_HOME must name the instance folder"),
    (["--bogus"], "ok", 2, "unrecognized arguments: --bogus"),
])
def test_reap_command_refuses_bad_input_without_a_traceback(
        args: list[str], home: str | None, code: int, says: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if home is not None:
        env["DAGSTER_HOME"] = str(tmp_path / home)
        if home == "ok":
            (tmp_path / home).mkdir()
    done = subprocess.run([sys.executable, "-m", "chartly_dagster.integration.reap", *args],
                          env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == code
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_every_shipped_instance_enables_run_monitoring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "chartly")
    local = {folder: dagster_instance_config(str(REPO / folder))[0]["run_monitoring"]
             for folder in ("dagster_home", "deploy/postgres")}
    assert local["dagster_home"] == local["deploy/postgres"]
    k8s = dagster_instance_config(str(REPO / "deploy" / "k8s"))[0]["run_monitoring"]
    for settings in (*local.values(), k8s):
        assert settings["enabled"] is True
        assert 0 < settings["free_slots_after_run_end_seconds"] <= 300
        assert settings.get("max_resume_run_attempts", 0) == 0
