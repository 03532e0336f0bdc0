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
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ReexecutionOptions,
    execute_job,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository

from chartly_dagster.integration.liveness import (
    LIVENESS_SENSOR_NAME,
    WorkerIdentity,
    WorkerState,
    reap_dead_runs,
)
from chartly_dagster.sandbox import Fault, Sandbox
from tests.fixtures_dagster import SECRETS

REPO = Path(__file__).resolve().parent.parent
ORDERS = "tenant-demo/proj-sales/orders"
ORDERS_KEY = AssetKey(["tenant-demo", "proj-sales", "orders"])
POOL = "tenant-demo/proj-sales/orders"  # ConnectorProfileTranslator.get_pool
DEFS = """\
from chartly_dagster.integration import build_definitions

defs = build_definitions({profiles!r}, env="dev", max_partitions_per_run=None,
                         summaries=False, schedules=False)
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
    done = subprocess.run([sys.executable, "-m", "chartly_dagster.integration.reap"],
                          env=env, capture_output=True, text=True, timeout=WAIT_S)
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
    env = {**os.environ, **SECRETS, "DAGSTER_HOME": str(home)}
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
        assert WorkerIdentity.from_tags(run.tags).pid == worker.pid
        assert _claimed_by(instance, run.run_id)

        # a live worker is never judged dead, by any check
        verdicts = reap_dead_runs(instance)
        assert [(v.run_id, v.state, v.action) for v in verdicts] == [
            (run.run_id, WorkerState.ALIVE, "")]

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
        assert "chartly's run liveness check" in failure[0].event_log_entry.user_message
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
        for partition in ("2026-01-10", "2026-01-11"):
            assert instance.fetch_materializations(AssetRecordsFilter(
                asset_key=ORDERS_KEY, asset_partitions=[partition]), limit=1).records
