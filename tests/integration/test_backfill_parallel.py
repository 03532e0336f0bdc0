"""Range runs through Dagster with windows in parallel, and nothing fetched twice.

Against the sandbox, through Dagster only (in-process jobs, re-execution, the `dagster`
CLI): N windows in flight write the same bytes as one at a time and share one rate limit;
a window that fails for good leaves the others recorded and a re-execution reuses them;
a run killed mid-range (SIGKILL of a `dagster job execute` process) is re-executed without
fetching any answered page again. Every
condition a test waits for is an event (a request the sandbox holds), never a duration.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from dagster import (
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    JobDefinition,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
    instance_for_test,
    multiprocess_executor,
)

from chartly_dagster.integration import (
    ChartlyResource,
    PartitionMetadata,
    build_definitions,
    load_profile,
)
from chartly_dagster.integration._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from chartly_dagster.integration.events import concurrent_windows
from chartly_dagster.integration.liveness import identified_in_process_executor
from chartly_dagster.integration.metadata import OBSERVATION_KIND, raw_value
from chartly_dagster.sandbox import Fault, Sandbox
from tests.support.sandbox import copy_profiles
from tests.support.shipped import ORDERS, ORDERS_JOB, ORDERS_PATH, SALES_JOB

ORDERS_DEV = "tenant-demo/proj-sales::connector/orders@2.1.0#dev"
#: the sandbox serves 1,440 orders a day: 500-record pages make three pages per window
PAGE_SIZE = 500
PAGES_PER_DAY = 3
#: no progress observation before a window's end in these tests
QUIET = 3600.0


def _orders_profiles(sandbox: Sandbox, folder: Path, *, rate_per_minute: int = 1200,
                     burst: int = 10) -> Path:
    """Only the orders profile (one asset, one partitions definition), re-paged and rated."""
    profiles = copy_profiles(folder, sandbox.port)
    for path in profiles.rglob("*.yaml"):
        if path.name != "orders.yaml":
            path.unlink()
    orders = next(profiles.rglob("orders.yaml"))
    doc = yaml.safe_load(orders.read_text(encoding="utf-8"))
    doc["spec"]["pagination"]["pageSize"] = PAGE_SIZE
    doc["spec"]["rateLimit"] = {"maxRequestsPerMinute": rate_per_minute, "burst": burst}
    orders.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return profiles


def _defs(profiles: Path, windows: int, processes: int) -> Definitions:
    """`processes` windows in worker processes from the start (0: threads only), so which
    path a window takes never depends on how busy the machine is."""
    return build_definitions(profiles, resource=ChartlyResource(
        env="dev", max_concurrent_windows=windows, window_processes=processes,
        progress_interval_seconds=QUIET))


def orders_job(profiles_dir: str, windows: int, processes: int) -> JobDefinition:
    """Module-level, so a re-execution can rebuild the job from its arguments."""
    return _defs(Path(profiles_dir), windows, processes).resolve_job_def(ORDERS_JOB)


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def _days(first: int, last: int) -> list[str]:
    return [f"2026-01-{day:02d}" for day in range(first, last + 1)]


def _latest(instance: DagsterInstance, partition: str) -> PartitionMetadata | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[partition]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    return PartitionMetadata.extract(records[0].asset_materialization.metadata)


def _pages(log: list[tuple[str, str, dict[str, str]]]) -> list[tuple[str, str]]:
    """(window start in epoch seconds, offset) of each request to the orders endpoint, in
    arrival order."""
    return [(query["from"], query["offset"]) for _, path, query in log if path == ORDERS_PATH]


def _code_location(tmp_path: Path, definitions: str) -> Path:
    """A DAGSTER_HOME (`tmp_path/dagster_home`) next to a code location file holding
    `definitions`, as a user's project has them; the home's path."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    (tmp_path / "defs.py").write_text(definitions, encoding="utf-8")
    return home


def _job_execute(home: Path, job: str, tags: dict[str, str],
                 **output: Any) -> subprocess.Popen:
    """`dagster job execute` on the code location `_code_location` wrote next to `home`,
    in a process group of its own (so a test may kill the whole run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(home)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-f",
         str(home.parent / "defs.py"), "-j", job, "--tags", json.dumps(tags)],
        env=env, start_new_session=True, **output)


def _wait_for(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Wait for a condition the test makes certain; the limit only ends a broken run."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def _run_holding_first_request(job: JobDefinition, instance: DagsterInstance,
                               sandbox: Sandbox, days: list[str],
                               until_windows: int | None) -> str:
    """Run the range; with `until_windows`, hold its first request until the sandbox has
    seen that many windows: only that many windows in flight at once can get there (the
    run adds windows while its process idles, which a held request makes certain). The
    run's id."""
    hold = (sandbox.faults.add(Fault(kind="hold", endpoint=ORDERS_PATH))
            if until_windows is not None else None)
    with ThreadPoolExecutor(1) as runner:
        future = runner.submit(job.execute_in_process, instance=instance,
                               tags=_range_tags(days[0], days[-1]), raise_on_error=False)
        if hold is not None:
            try:
                _wait_for(lambda: len({w for w, _ in _pages(sandbox.request_log)})
                          >= until_windows or future.done(), "windows in flight")
                assert not future.done(), "the run ended with its first request held"
            finally:
                hold.release()
        assert future.result().success
        return future.result().run_id


def test_parallel_windows_write_the_same_bytes_and_share_one_rate_limit(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path) -> None:
    rate, burst = 600, 2  # ten requests a second, two at once
    profiles = _orders_profiles(sandbox, tmp_path / "profiles", rate_per_minute=rate,
                                burst=burst)
    days = _days(1, 6)
    hashes: dict[tuple[int, int], dict[str, str | None]] = {}
    # One window; four on threads; four of which one in a worker process.
    for windows, processes in ((1, 0), (4, 0), (4, 1)):
        sandbox.clear_requests()
        home = tmp_path / f"home-{windows}-{processes}"
        home.mkdir()
        with instance_for_test(temp_dir=str(home)) as instance:
            started = time.monotonic()
            run_id = _run_holding_first_request(
                orders_job(str(profiles), windows, processes), instance, sandbox, days,
                until_windows=windows if windows > 1 else None)
            if windows > 1:  # the step says how many windows it had in flight at most
                messages = [entry.user_message for entry in instance.all_logs(run_id)]
                assert f"at most {windows} window(s) were in flight at once" + (
                    f", at most {processes} in worker processes" if processes else ""
                ) in messages, [m for m in messages if m.startswith("at most")]
            metas = {day: _latest(instance, day) for day in days}
            hashes[windows, processes] = {day: m.content_hash if m else None
                                          for day, m in metas.items()}
            pages = _pages(sandbox.request_log)
            # Every page once: 3 pages a window, no page fetched twice.
            assert len(pages) == len(set(pages)) == PAGES_PER_DAY * len(days)
            for day, meta in metas.items():
                assert meta is not None and meta.pages == PAGES_PER_DAY and not meta.reused
                observed = instance.fetch_observations(
                    AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[day]),
                    limit=100).records
                kinds = sorted(raw_value(r.asset_observation.metadata[OBSERVATION_KIND])
                               for r in observed if r.asset_observation is not None)
                assert kinds == ["window_complete"], kinds  # ended within its interval
            # One token bucket for all windows, threads and worker processes alike (it
            # lives in shared memory): a bucket holds at most `burst` tokens when
            # the run starts and refills at `rate`, so the k-th request cannot have been
            # sent, let alone received, before started + (k - burst) / rate.
            arrivals = sorted(sandbox.request_times(ORDERS_PATH))
            for k, arrived in enumerate(arrivals, start=1):
                assert arrived >= started + (k - burst) / (rate / 60) - 1e-6, (k, arrived)
    assert None not in hashes[1, 0].values()
    assert hashes[1, 0] == hashes[4, 0] == hashes[4, 1]


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "worker-processes"])
def test_a_window_failing_for_good_keeps_the_others_and_reexecution_reuses_them(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path,
        dagster_instance: DagsterInstance, processes: int) -> None:
    profiles = _orders_profiles(sandbox, tmp_path / "profiles")
    days = _days(1, 4)
    # The fifth request fails with 401 (never retried): some window, mid-way, for good.
    sandbox.faults.add(Fault(kind="status", status=401, endpoint=ORDERS_PATH, on_request=5))
    recon = build_reconstructable_job(__name__, "orders_job",
                                      reconstructable_args=(str(profiles), 2, processes))
    with execute_job(recon, instance=dagster_instance,
                     tags=_range_tags(days[0], days[-1])) as first:
        assert not first.success
        first_id = first.run_id
    first_pages = _pages(sandbox.request_log)
    failed_start, failed_offset = first_pages[4]
    failed_day = datetime.fromtimestamp(int(failed_start), UTC).date().isoformat()
    answered = set(first_pages[:4] + first_pages[5:])
    assert len(answered) == len(first_pages) - 1  # nothing was fetched twice either
    failures = [entry.dagster_event.step_failure_data.error.message
                for entry in dagster_instance.all_logs(
                    first_id, of_type=DagsterEventType.STEP_FAILURE)
                if entry.dagster_event and entry.dagster_event.step_failure_data
                and entry.dagster_event.step_failure_data.error]
    assert any(f"window(s) {failed_day} failed, 3 finished" in message
               for message in failures), failures
    # The other windows finished and are recorded, though the step failed.
    kept = {day: _latest(dagster_instance, day) for day in days if day != failed_day}
    assert _latest(dagster_instance, failed_day) is None
    for meta in kept.values():
        assert meta is not None and meta.pages == PAGES_PER_DAY and not meta.reused

    sandbox.clear_requests()
    with execute_job(recon, instance=dagster_instance, tags=_range_tags(days[0], days[-1]),
                     reexecution_options=ReexecutionOptions.from_failure(
                         first_id, dagster_instance)) as second:
        assert second.success
    second_pages = _pages(sandbox.request_log)
    # Only the failed window, from its failed page on; nothing answered before again.
    assert not answered & set(second_pages)
    assert second_pages == [(failed_start, str(offset)) for offset in
                            range(int(failed_offset), PAGE_SIZE * PAGES_PER_DAY, PAGE_SIZE)]
    for day, before in kept.items():
        after = _latest(dagster_instance, day)
        assert after is not None and after.reused and before is not None
        assert after.content_hash == before.content_hash
    resumed = _latest(dagster_instance, failed_day)
    assert resumed is not None and not resumed.reused
    assert resumed.resumed_from_page == int(failed_offset) // PAGE_SIZE
    truth = sandbox.ground_truth(ORDERS_PATH, int(failed_start), int(failed_start) + 86_400)
    assert resumed.records == len(truth)


def test_a_window_whose_worker_dies_resumes_on_a_thread_in_the_same_run(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path,
        dagster_instance: DagsterInstance) -> None:
    """A worker process killed mid-window (the OOM killer, an operator) costs its window
    nothing staged: the run resumes it on a thread after its last staged page and
    succeeds, without a re-execution."""
    profiles = _orders_profiles(sandbox, tmp_path / "profiles")
    days = _days(1, 2)
    first = str(int(datetime.fromisoformat(f"{days[0]}T00:00:00+00:00").timestamp()))
    # The first window goes to the worker (one process slot, taken from the start); its
    # second request is held, so the worker has staged its first page and is waiting.
    hold = sandbox.faults.add(Fault(kind="hold", endpoint=ORDERS_PATH,
                                    query={"from": first, "offset": str(PAGE_SIZE)}))
    killed: list[BaseException] = []

    def kill_the_worker() -> None:
        try:
            _wait_for(lambda: (first, str(PAGE_SIZE)) in _pages(sandbox.request_log),
                      "the worker's second page held")
            (worker,) = multiprocessing.active_children()
            os.kill(worker.pid, signal.SIGKILL)
            worker.join()
        except BaseException as exc:  # raised in the test's thread below
            killed.append(exc)
        finally:
            hold.release()  # the dead worker's request: answered to nobody

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    result = orders_job(str(profiles), 2, 1).execute_in_process(
        instance=dagster_instance, tags=_range_tags(days[0], days[-1]), raise_on_error=False)
    killer.join()
    assert not killed, killed
    assert result.success
    said = " ".join(entry.user_message for entry in dagster_instance.all_logs(result.run_id))
    assert f"{days[0]}: the worker process fetching {days[0]} died" in said
    assert "resuming it on a thread" in said
    resumed, other = _latest(dagster_instance, days[0]), _latest(dagster_instance, days[1])
    assert resumed is not None and other is not None
    assert resumed.pages == other.pages == PAGES_PER_DAY and not resumed.reused
    assert resumed.resumed_from_page == 1  # the page the worker staged was kept
    truth = sandbox.ground_truth(ORDERS_PATH, int(first), int(first) + 86_400)
    assert resumed.records == len(truth)
    pages = _pages(sandbox.request_log)
    assert pages.count((first, "0")) == 1  # the staged page was not fetched again
    assert pages.count((first, str(PAGE_SIZE))) == 2  # the held request, then the resume
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("processes", [0, 1], ids=["threads", "worker-process"])
def test_a_run_killed_mid_range_is_reexecuted_without_fetching_a_page_twice(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path, processes: int) -> None:
    windows, held_from = 2, 8
    profiles = _orders_profiles(sandbox, tmp_path / "profiles")
    days = _days(1, 6)
    home = _code_location(tmp_path, (
        "from chartly_dagster.integration import ChartlyResource, build_definitions\n"
        f"defs = build_definitions({str(profiles)!r}, resource=ChartlyResource(env='dev', "
        f"max_concurrent_windows={windows}, window_processes={processes}, "
        f"progress_interval_seconds={QUIET}))\n"))
    # Every request from the 8th on is held: seven pages are answered (at most two whole
    # windows), so both workers end up holding a request, each after its staged pages.
    hold = sandbox.faults.add(Fault(kind="hold", endpoint=ORDERS_PATH, on_request=held_from,
                                    times=None))
    with DagsterInstance.from_config(str(home)) as instance:  # storage made once, up front
        proc = _job_execute(home, ORDERS_JOB, _range_tags(days[0], days[-1]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(lambda: len(sandbox.request_log) >= held_from - 1 + windows
                      or proc.poll() is not None, "both workers held")
            assert proc.poll() is None, "the run ended before it was killed"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
            proc.wait()
            hold.release()
            sandbox.faults.clear()
        first_pages = _pages(sandbox.request_log)
        answered = set(first_pages[:held_from - 1])
        (killed,) = instance.get_run_records()
        # What run monitoring does for a dead worker: mark the run failed, free its slots.
        instance.report_run_failed(killed.dagster_run)
        instance.event_log_storage.free_concurrency_slots_for_run(killed.dagster_run.run_id)
        sandbox.clear_requests()
        recon = build_reconstructable_job(__name__, "orders_job",
                                          reconstructable_args=(str(profiles), windows,
                                                                processes))
        with execute_job(recon, instance=instance, tags=_range_tags(days[0], days[-1]),
                         reexecution_options=(
                ReexecutionOptions.from_failure(killed.dagster_run.run_id, instance))) as again:
            assert again.success
        second_pages = _pages(sandbox.request_log)
        assert len(second_pages) == len(set(second_pages))
        assert not answered & set(second_pages)  # no answered page was fetched again
        assert len(answered) + len(second_pages) == PAGES_PER_DAY * len(days)
        metas = {day: _latest(instance, day) for day in days}
        kept_pages = 0
        for day, meta in metas.items():
            assert meta is not None and meta.pages == PAGES_PER_DAY, day
            kept_pages += meta.pages if meta.reused else meta.resumed_from_page
        assert kept_pages == len(answered)


def test_the_connectors_of_a_project_run_proceed_side_by_side(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path) -> None:
    """A project job launched as a user would (`dagster job execute` on a code location file,
    the default executor) fetches its connectors at the same time; each step, itself a
    process forked from Dagster's server, hands one of its windows to a worker process."""
    profiles = copy_profiles(tmp_path / "profiles", sandbox.port)
    home = _code_location(tmp_path, (
        "from chartly_dagster.integration import ChartlyResource, build_definitions\n"
        f"defs = build_definitions({str(profiles)!r}, schedules=False, "
        "resource=ChartlyResource(env='dev', window_processes=1))\n"))
    # Two connectors' requests are held until released: a run that fetched its connectors
    # one after another could never have both held at once.
    paths = (ORDERS_PATH, "/v1/invoices")
    holds = [sandbox.faults.add(Fault(kind="hold", endpoint=path, times=None))
             for path in paths]
    proc = _job_execute(home, SALES_JOB, _range_tags("2026-01-10", "2026-01-11"),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: all(sandbox.request_count(p) for p in paths)
                  or proc.poll() is not None, "both connectors to wait on the upstream at once")
        assert proc.poll() is None, "the run ended before both connectors were held"
    finally:
        for hold in holds:
            hold.release()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    # each step ran in a process forked from the preloaded server, not in the run worker
    assert "Executing steps using multiprocess executor" in output, output[-3000:]
    assert 'Launching subprocess for "tenant_demo__proj_sales__orders"' in output
    assert ("at most 2 window(s) were in flight at once, at most 1 in worker processes"
            in output), output[-3000:]


def sales_job(profiles_dir: str) -> JobDefinition:
    """Module-level, so Dagster can treat the project job as reconstructable."""
    return build_definitions(Path(profiles_dir), env="dev", schedules=False).resolve_job_def(
        SALES_JOB)


def test_a_project_run_on_an_ephemeral_instance_runs_in_process(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path) -> None:
    """Step processes need a stored instance; without one the same job runs in process
    instead of failing on the executor's requirements."""
    profiles = copy_profiles(tmp_path / "profiles", sandbox.port)
    recon = build_reconstructable_job(__name__, "sales_job",
                                      reconstructable_args=(str(profiles),))
    with DagsterInstance.ephemeral() as instance, execute_job(
            recon, instance=instance, tags={"dagster/partition": "2026-01-10"}) as result:
        assert result.success
        engine = [e.message for e in result.all_events
                  if e.event_type == DagsterEventType.ENGINE_EVENT]
    assert any(m and m.startswith("Executing steps in process") for m in engine), engine
    assert not any(m and "multiprocess executor" in m for m in engine), engine


def test_a_chosen_executor_runs_project_jobs_and_backfills(sandbox: Sandbox,
                                                           tmp_path: Path) -> None:
    """Connectors side by side is one option away; a profile's own job stays in process."""
    assert build_definitions(copy_profiles(tmp_path / "default", sandbox.port), env="dev"
                             ).resolve_job_def(SALES_JOB).executor_def.name == (
        "chartly_side_by_side")
    parallel = multiprocess_executor.configured({"max_concurrent": 4}, name="side_by_side")
    defs = build_definitions(copy_profiles(tmp_path / "profiles", sandbox.port), env="dev",
                             executor=parallel)
    # Wrapped so each run records its worker (the liveness sensor judges it), same name.
    assert defs.resolve_job_def("tenant_demo__proj_sales").executor_def.name == "side_by_side"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "side_by_side"
    assert defs.resolve_job_def(ORDERS_JOB).executor_def is identified_in_process_executor


def test_windows_at_once_come_from_the_profile_lowered_by_the_resource(
        sandbox: Sandbox, tmp_path: Path) -> None:
    plain = load_profile(_orders_profiles(sandbox, tmp_path / "plain"), ORDERS_DEV)
    profiles = _orders_profiles(sandbox, tmp_path / "limited")
    orders = next(profiles.rglob("orders.yaml"))
    doc = yaml.safe_load(orders.read_text(encoding="utf-8"))
    doc["spec"]["partitions"]["maxConcurrentWindows"] = 2
    orders.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    limited = load_profile(profiles, ORDERS_DEV)
    assert [concurrent_windows(plain, n) for n in (None, 1, 8)] == [4, 1, 8]
    assert [concurrent_windows(limited, n) for n in (None, 1, 8)] == [2, 1, 2]
    # Unset, it is not dumped: the resolved hash (and golden plans) stay as they were.
    assert "maxConcurrentWindows" not in plain.spec.partitions.model_dump(by_alias=True)
    assert limited.spec.partitions.model_dump(by_alias=True)["maxConcurrentWindows"] == 2
    assert limited.hash != plain.hash


def test_a_finished_file_that_changed_since_is_fetched_again_not_reused(
        sandbox: Sandbox, secrets_env: dict, tmp_path: Path,
        dagster_instance: DagsterInstance) -> None:
    profiles = _orders_profiles(sandbox, tmp_path / "profiles")
    days = _days(1, 2)
    # One window at a time: the first finishes, the second's first request fails for good.
    sandbox.faults.add(Fault(kind="status", status=401, endpoint=ORDERS_PATH,
                             on_request=PAGES_PER_DAY + 1))
    recon = build_reconstructable_job(__name__, "orders_job",
                                      reconstructable_args=(str(profiles), 1, 0))
    with execute_job(recon, instance=dagster_instance,
                     tags=_range_tags(days[0], days[-1])) as first:
        assert not first.success
        first_id = first.run_id
    finished = _latest(dagster_instance, days[0])
    assert finished is not None and finished.uri is not None
    path = Path(finished.uri.removeprefix("file://"))
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # a record lost since
    sandbox.clear_requests()
    with execute_job(recon, instance=dagster_instance, tags=_range_tags(days[0], days[-1]),
                     reexecution_options=ReexecutionOptions.from_failure(
                         first_id, dagster_instance)) as second:
        assert second.success
    refetched = _latest(dagster_instance, days[0])
    assert refetched is not None and not refetched.reused
    assert refetched.content_hash == finished.content_hash  # the same records, fetched again
    assert len(_pages(sandbox.request_log)) == 2 * PAGES_PER_DAY
