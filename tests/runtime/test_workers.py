"""Windows fetched in worker processes (runtime/workers.py), against the live sandbox.

What a worker hands back must be what a thread would have: the same file bytes, every page
in order before the window's end, errors whole, and its log records in the step's loggers.
A worker must never outlive its step: one whose step is SIGKILLed mid-window is gone too.
Every condition waited for is an event (a report, a held request, a process gone).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from chartly_dagster.core.errors import ChartlyError
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.egress import EnvPolicy
from chartly_dagster.runtime.errors import WorkerLost
from chartly_dagster.runtime.executor import (
    NetworkOptions,
    PageProgress,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from chartly_dagster.runtime.workers import (
    Report,
    WindowProcesses,
    WorkerNetwork,
    _cgroup_cpu_quotas,
    _Outbox,
    process_slots,
    usable_cpus,
)
from chartly_dagster.sandbox import Fault
from tests.support.sandbox import LiveProfiles
from tests.support.secrets import SECRETS
from tests.support.shipped import ORDERS_PATH

ORDERS_DEV = "tenant-demo/proj-sales::connector/orders@2.1.0#dev"
DAYS = {f"2026-01-0{d}": Window.parse(f"2026-01-0{d}T00:00:00Z", f"2026-01-0{d + 1}T00:00:00Z")
        for d in (1, 2)}


def _network() -> NetworkOptions:
    return NetworkOptions("dev", SecretResolver([MappingSecretProvider(SECRETS)]))


def _target(root: Path, partition: str) -> WindowTarget:
    return WindowTarget.at(str(root), partition=partition, resumable=True)


def _ended(reports: queue.SimpleQueue[Report], count: int) -> dict[str, list]:
    """Every report of `count` windows, by partition, up to and including each end."""
    seen: dict[str, list] = {}
    ended = 0
    while ended < count:
        partition, item = reports.get(timeout=120)  # the limit only ends a broken run
        seen.setdefault(partition, []).append(item)
        ended += not isinstance(item, PageProgress)
    return seen


def test_worker_processes_write_what_a_thread_writes(
        live_profiles: LiveProfiles, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    resolved = live_profiles.resolve(ORDERS_DEV)
    alone = {p: fetch_window(resolved, w, build_plan(resolved, w),
                             target=_target(tmp_path / "threads", p), network=_network())
             for p, w in DAYS.items()}
    reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
    processes = WindowProcesses(2, resolved, reports.put)
    caplog.set_level(logging.INFO, logger="chartly")
    try:
        for partition, window in DAYS.items():
            processes.submit(partition, window, build_plan(resolved, window),
                             _target(tmp_path / "workers", partition),
                             lambda: WorkerNetwork.of(_network(), resolved))
        seen = _ended(reports, len(DAYS))
    finally:
        processes.close()
    for partition, items in seen.items():
        *pages, result = items
        assert isinstance(result, WindowResult), result
        assert result.content_hash == alone[partition].content_hash
        assert result.records == alone[partition].records > 0
        # every page reported, in order, before the window's end
        assert [p.page for p in pages] == list(range(1, result.pages + 1))
    # A worker's audit records reach the step's loggers, marked with the worker's pid.
    finished = [r for r in caplog.records if r.name == "chartly.audit"
                and "connector.run.succeeded" in r.getMessage()]
    assert len(finished) == len(DAYS)
    assert all(r.process != os.getpid() for r in finished)


def test_a_window_failing_in_a_worker_hands_back_its_error_whole(
        live_profiles: LiveProfiles, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resolved = live_profiles.resolve(ORDERS_DEV)
    live_profiles.sandbox.faults.add(Fault(kind="status", status=401, endpoint=ORDERS_PATH,
                                           on_request=2))
    reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
    processes = WindowProcesses(1, resolved, reports.put)
    partition, window = next(iter(DAYS.items()))
    try:
        processes.submit(partition, window, build_plan(resolved, window),
                         _target(tmp_path, partition),
                         lambda: WorkerNetwork.of(_network(), resolved))
        (items,) = _ended(reports, 1).values()
    finally:
        processes.close()
    *pages, error = items
    assert [p.page for p in pages] == [1]  # the page before the failure was staged
    assert isinstance(error, ChartlyError) and not isinstance(error, WindowResult)
    assert (error.code, getattr(error, "status", None)) == ("unauthenticated", 401)
    # What came back (the error, the worker's log records) never holds the credential.
    secret = SECRETS[("orders-api", "api-key")]
    seen = [str(error), repr(error), str(error.to_dict())]
    seen += [r.getMessage() + repr(vars(r)) for r in caplog.records]
    forwarded = {r.name for r in caplog.records if r.process != os.getpid()}
    assert {"chartly.audit", "httpx"} <= forwarded  # the worker's, its request lines too
    assert not [text for text in seen if secret in text]


def test_secrets_cross_only_as_values_never_in_repr(live_profiles: LiveProfiles) -> None:
    resolved = live_profiles.resolve(ORDERS_DEV)
    network = WorkerNetwork.of(_network(), resolved)
    secret = SECRETS[("orders-api", "api-key")]
    assert network.secrets and secret not in repr(network)
    # what a worker rebuilds resolves the same credential
    assert network.options().secrets.resolve_auth(resolved.spec.auth).values() == \
        _network().secrets.resolve_auth(resolved.spec.auth).values()


def test_a_worker_that_cannot_start_leaves_no_window_behind_in_the_pool(
        live_profiles: LiveProfiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's pool queues a task before it starts a process for it: were a window handed
    over while a process failed to start (EAGAIN under a container's pids limit), another
    worker would fetch it later while the step fetched it on a thread. Every worker starts
    before the first window, so a failed start leaves nothing queued."""
    spawn = ProcessPoolExecutor._spawn_process
    started: list[int] = []

    def second_fails(pool: ProcessPoolExecutor) -> None:
        if started:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        started.append(1)
        spawn(pool)

    monkeypatch.setattr(ProcessPoolExecutor, "_spawn_process", second_fails)
    resolved = live_profiles.resolve(ORDERS_DEV)
    reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
    processes = WindowProcesses(2, resolved, reports.put)
    try:
        for partition, window in DAYS.items():
            assert not processes.submit(partition, window, build_plan(resolved, window),
                                        _target(tmp_path, partition),
                                        lambda: WorkerNetwork.of(_network(), resolved))
        assert processes.slots == 0 and started == [1]
    finally:
        processes.close()
    assert reports.empty()  # no window reached the worker that did start
    assert not live_profiles.sandbox.request_log


def test_a_worker_ends_on_sigterm_even_when_its_step_ignores_it(
        live_profiles: LiveProfiles, tmp_path: Path) -> None:
    """A broken pool ends its workers with SIGTERM. A step started with SIGINT ignored (a
    background job) has SIGTERM ignored too, since Dagster maps SIGTERM to SIGINT's
    handler, and a spawned process inherits an ignored signal."""
    resolved = live_profiles.resolve(ORDERS_DEV)
    sandbox = live_profiles.sandbox
    hold = sandbox.faults.add(Fault(kind="hold", endpoint=ORDERS_PATH))
    reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
    processes = WindowProcesses(1, resolved, reports.put)
    partition, window = next(iter(DAYS.items()))
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        assert processes.submit(partition, window, build_plan(resolved, window),
                                _target(tmp_path, partition),
                                lambda: WorkerNetwork.of(_network(), resolved))
        signal.signal(signal.SIGTERM, previous)
        deadline = time.monotonic() + 120  # the limit only ends a broken run
        while not sandbox.request_log:  # the worker is mid-window, its request held
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (worker,) = multiprocessing.active_children()
        worker.terminate()
        worker.join(120)
        assert worker.exitcode == -signal.SIGTERM
        lost, error = reports.get(timeout=120)
        assert lost == partition and isinstance(error, WorkerLost)
    finally:
        signal.signal(signal.SIGTERM, previous)
        hold.release()
        processes.close()


class _KeywordOnly(Exception):
    """An error that pickles but cannot be rebuilt (as httpx.HTTPStatusError)."""

    def __init__(self, *, detail: str) -> None:
        super().__init__(detail)


def test_an_error_the_step_could_not_rebuild_still_ends_its_window() -> None:
    reader, writer = multiprocessing.Pipe(duplex=False)
    _Outbox(writer, threading.Lock()).put("2026-01-01", _KeywordOnly(detail="boom"))
    partition, data = pickle.loads(reader.recv_bytes())
    error = pickle.loads(data)
    assert partition == "2026-01-01"
    assert isinstance(error, RuntimeError) and "_KeywordOnly" in str(error)


def test_an_env_policy_pickles_whole() -> None:
    policy = EnvPolicy(max_timeout_ms=5_000)
    assert pickle.loads(pickle.dumps(policy)) == policy


#: a step as a user's script might be: no `if __name__ == "__main__":` guard. A worker must
#: not import it (it would run the script again); each run of it leaves a line in `ran`.
_STEP = """
import sys, multiprocessing
from pathlib import Path
from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.executor import NetworkOptions, WindowTarget
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from chartly_dagster.runtime.workers import WindowProcesses, WorkerNetwork
from tests.support.secrets import SECRETS

with open(Path(sys.argv[3]) / "ran", "a") as ran:
    ran.write("once\\n")
resolved = ProfileCatalog.load(sys.argv[1]).resolve(parse_ref(sys.argv[2]))
window = Window.parse("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
network = NetworkOptions("dev", SecretResolver([MappingSecretProvider(SECRETS)]))
processes = WindowProcesses(1, resolved, lambda report: None)
processes.submit("2026-01-01", window, build_plan(resolved, window),
                 WindowTarget.at(sys.argv[3], partition="2026-01-01", resumable=True),
                 lambda: WorkerNetwork.of(network, resolved))
print(*[p.pid for p in multiprocessing.active_children()], flush=True)
sys.stdin.read()  # until the test kills this step (or dies itself, closing the pipe)
"""


def _alive(pid: int) -> bool:
    if not Path("/proc/self/stat").exists():  # no /proc (macOS): init reaps the orphan
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


def test_a_worker_dies_with_its_step_and_never_reruns_its_script(
        live_profiles: LiveProfiles, tmp_path: Path) -> None:
    sandbox = live_profiles.sandbox
    (tmp_path / "data").mkdir()
    hold = sandbox.faults.add(Fault(kind="hold", endpoint=ORDERS_PATH))
    script = tmp_path / "step.py"
    script.write_text(_STEP, encoding="utf-8")
    step = subprocess.Popen(
        [sys.executable, str(script), str(live_profiles.profiles_dir), ORDERS_DEV,
         str(tmp_path / "data")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert step.stdout is not None
        deadline = time.monotonic() + 120  # the limit only ends a broken run
        assert select.select([step.stdout], [], [], 120)[0], "the step never started a worker"
        (worker,) = map(int, step.stdout.readline().split())
        ran = tmp_path / "data" / "ran"
        while not sandbox.request_log:  # the worker is mid-window, its request held
            assert time.monotonic() < deadline and step.poll() is None
            assert ran.read_text().splitlines() == ["once"], "a worker ran the script"
            time.sleep(0.02)
        assert _alive(worker)
        # The worker got as far as a request, so it is past its start: the script ran once.
        assert ran.read_text().splitlines() == ["once"]
        step.send_signal(signal.SIGKILL)
        step.wait()
        while _alive(worker):  # it dies with its parent (Linux: the kernel kills it)
            assert time.monotonic() < deadline, "the worker outlived its step"
            time.sleep(0.02)
    finally:
        if step.poll() is None:
            step.kill()
        hold.release()


def test_worker_process_slots_follow_the_setting_and_the_cpus() -> None:
    assert process_slots(None, 1, cpus=4) == 0  # one window: nothing to overlap
    assert process_slots(None, 4, cpus=4) == 3  # one fewer than the CPUs
    assert process_slots(None, 2, cpus=4) == 1  # the step's process fetches one too
    assert process_slots(None, 4, cpus=1) == 0  # one CPU: processes cannot help
    assert process_slots(0, 4, cpus=4) == 0  # threads only
    assert process_slots(2, 4, cpus=1) == 2 and process_slots(8, 4) == 4  # as configured
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


def test_cpu_quotas_are_read_up_the_process_cgroup_and_at_each_root(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    # cgroup v2: a systemd CPUQuota=150% on the service's slice, none on the service itself
    (root / "system.slice" / "app.service").mkdir(parents=True)
    (root / "system.slice" / "cpu.max").write_text("150000 100000\n")
    (root / "system.slice" / "app.service" / "cpu.max").write_text("max 100000\n")
    # cgroup v1: a container's own cgroup mounted as the root, /proc naming the host's path
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    own = tmp_path / "self-cgroup"
    own.write_text("2:cpu,cpuacct:/docker/abc\n0::/system.slice/app.service\n")
    assert sorted(_cgroup_cpu_quotas(root, own)) == [0.5, 1.5]
    assert usable_cpus(root, own) == 1  # never below one
    affinity = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count())
    assert usable_cpus(tmp_path / "none", own) == affinity  # no quota: the affinity alone
