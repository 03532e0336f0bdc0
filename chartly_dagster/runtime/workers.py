"""Windows of a range fetched in worker processes: the other cores for a CPU-bound range.

Windows on threads share one GIL. Against a fast upstream one window keeps its process
busy (on loopback the fetching thread holds the GIL about 11 s per 1,000,000 records), so
threads add nothing there, while a second process fetches a second window on another core:
30 windows of 33,000 records took 15.4 s in one process and 9.2 s in two (2 cores).

A `WindowProcesses` pool runs each window it is given in a worker process, one at a time
per process, with the same `fetch_or_reuse` the threads call: same files, manifests and
content hashes. What crosses to a worker is plain data: the resolved profile, the window,
its plan and target, and a `WorkerNetwork` (the env, its policy, and the secret values the
step resolved, never a provider). A worker builds its own client through the same egress
guard and installs the same log redaction. It draws on the connector's token bucket, which
lives in shared memory (`ratelimit.bucket_for`), so `maxRequestsPerMinute` holds across
threads and processes alike.

Everything a window reports travels back on one pipe, in order: its pages, then its
result or error, and its log records (audit, metrics, httpx's request lines) to be handled
by the step's own loggers. Only workers write to it and only the step's forwarding thread
reads it, so a worker killed mid-write (a broken pool's workers are killed wherever they
are) can block nothing in the step: the forwarder ends when the last writer is gone.
Workers are spawned (a clean interpreter: no step threads or locks copied), ignore Ctrl-C
(the step stops them after their current page, as it stops threads), and die with the
step's process. A worker that dies anyway breaks the pool; the step then resumes the
windows it had in workers on threads (`integration/events.py`).
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from logging.handlers import QueueHandler
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from ..core.catalog import ResolvedProfile
from ..core.plan import Plan
from ..core.refs import format_ref
from ..core.windows import Window
from .egress import EnvPolicy
from .errors import WorkerLost
from .executor import NetworkOptions, RunEvent, WindowResult, WindowTarget, fetch_or_reuse
from .ratelimit import (
    WORKER_START_METHOD,
    BucketKey,
    TokenBucket,
    adopt_bucket,
    bucket_for,
    bucket_key,
)
from .recording import RecordTo, ReplayFrom
from .secrets import MappingSecretProvider, SecretResolver

#: what a window reports: (partition, a page event, its result, or its error)
Report = tuple[str, RunEvent | WindowResult | BaseException]
#: Linux `prctl` option: the signal this process gets when its parent dies
_PR_SET_PDEATHSIG = 1
#: how often a worker without that option looks whether its parent is still there
_ORPHAN_CHECK_SECONDS = 1.0

log = logging.getLogger(__name__)
#: the loggers whose records a worker hands back to the step: its own (audit, metrics) and
#: httpx's request lines, which a deployment may route to Dagster's log
_FORWARDED_LOGGERS = ("chartly", "httpx")


def usable_cpus(cgroups: Path = Path("/sys/fs/cgroup"),
                own: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may use: its affinity, lowered by the tightest CPU quota on its
    cgroup or any cgroup above it (a container's CPU limit, a systemd `CPUQuota`), which
    the affinity does not show."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quotas = [math.ceil(q) for q in _cgroup_cpu_quotas(cgroups, own)]
    return max(1, min([cpus, *quotas]))


def _cgroup_cpu_quotas(cgroups: Path, own: Path) -> Iterator[float]:
    """The CPU quotas (in CPUs) set on this process's cgroups and their ancestors, cgroup
    v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`). A container often mounts its own cgroup
    as the root while /proc still names the host's path, so each root is read too."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        lines = []
    paths = {"v1": ["/"], "v2": ["/"]}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            paths["v2"].append(path)
        elif "cpu" in controllers.split(","):
            paths["v1"].append(path)
    mounts = {"v2": [cgroups, cgroups / "unified"], "v1": [cgroups / "cpu",
                                                          cgroups / "cpu,cpuacct"]}
    for version, mounts_of in mounts.items():
        for mount in mounts_of:
            folders = {mount / rel for path in paths[version]
                       for rel in _ancestors(path.strip("/"))}
            for folder in sorted(folders):
                quota = _quota(folder, version)
                if quota is not None:
                    yield quota


def _ancestors(path: str) -> list[str]:
    """`a/b/c` -> ["a/b/c", "a/b", "a", ""]."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _quota(folder: Path, version: str) -> float | None:
    try:
        if version == "v2":
            quota, period = (folder / "cpu.max").read_text().split()
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


def process_slots(configured: int | None, windows: int, cpus: int | None = None) -> int:
    """How many of a run's `windows` in flight may be in worker processes: as configured,
    else one fewer than the usable CPUs (none for a single window, and never all of them:
    the step's own process fetches too)."""
    if windows < 2:
        return 0
    if configured is not None:
        return min(configured, windows)
    return max(0, min((cpus or usable_cpus()) - 1, windows - 1))


class WindowStopped(Exception):
    """Raised in a window after a staged page because its step is being torn down; the
    window resumes from that page when the run is re-executed."""


@dataclass(frozen=True)
class WorkerNetwork:
    """How a worker reaches the upstream: `NetworkOptions` as plain data.

    The secret values are the ones the step resolved for the profile's auth, handed over
    on the worker's private pipe; they are kept out of `repr` like every secret.
    """

    env: str
    env_policy: EnvPolicy | None
    recording: RecordTo | ReplayFrom | None
    secrets: tuple[tuple[str, str, str], ...] = field(repr=False)

    @classmethod
    def of(cls, network: NetworkOptions, resolved: ResolvedProfile) -> WorkerNetwork:
        values = []
        if network.secrets is not None:
            for ref in resolved.spec.auth.secret_refs():
                values.append((ref.name, ref.key, network.secrets.resolve(ref).reveal()))
        return cls(network.env, network.env_policy, network.recording, tuple(values))

    def options(self) -> NetworkOptions:
        secrets = SecretResolver([MappingSecretProvider(
            {(name, key): value for name, key, value in self.secrets})])
        return NetworkOptions(self.env, secrets, self.env_policy, self.recording)


class WindowProcesses:
    """Up to `slots` worker processes for one connector's windows, started on first use.

    `report` gets every window's events, result or error, on this pool's forwarding
    thread (as the thread windows report on theirs). `close` stops the windows in flight
    after their current page and waits for the workers to exit.
    """

    def __init__(self, slots: int, resolved: ResolvedProfile,
                 report: Callable[[Report], None]) -> None:
        self.slots = slots
        self._resolved = resolved
        self._report = report
        self._pool: ProcessPoolExecutor | None = None
        self._forwarder: threading.Thread | None = None
        self._context = multiprocessing.get_context(WORKER_START_METHOD)
        self._reader: Any = None
        self._writer: Any = None
        self._stop: Any = None
        self._network: WorkerNetwork | None = None

    def _start(self) -> ProcessPoolExecutor:
        """The pool, with every worker started before any window is handed over: Python's
        pool queues a task before it starts a process for it, so a process that failed to
        start would leave a window queued for another worker while the caller fetched it on
        a thread, twice at once."""
        context = self._context
        self._stop = context.Event()
        self._reader, self._writer = context.Pipe(duplex=False)
        key = bucket_key(self._resolved)
        bucket = bucket_for(*key)
        bucket.share()  # before any worker inherits it
        everyone = context.Barrier(self.slots)
        self._pool = pool = ProcessPoolExecutor(
            max_workers=self.slots, mp_context=context, initializer=_start_worker,
            initargs=(_Outbox(self._writer, context.Lock()), self._stop, key, bucket,
                      {name: _lowest_level(name) for name in _FORWARDED_LOGGERS},
                      os.getpid(), everyone))
        self._forwarder = threading.Thread(target=self._forward, name="chartly-workers",
                                           daemon=True)
        self._forwarder.start()
        try:
            with _main_left_out(), _interrupts_held():  # workers start within `submit`
                for _ in range(self.slots):  # each waits for all, so each takes a process
                    pool.submit(_all_started)
        except BaseException:
            everyone.abort()  # the workers that did start stop waiting
            raise
        return pool

    def submit(self, partition: str, window: Window, plan: Plan, target: WindowTarget,
               network: Callable[[], WorkerNetwork]) -> bool:
        """Hand a window to a worker; False (and no more slots) when no worker can take it
        (the pool broke, or a process could not start), so the caller fetches it on a
        thread instead. `network` is called once, when the first worker starts."""
        if self.slots <= 0:
            return False
        try:
            if self._pool is None:
                self._network = network()
                self._start()
            assert self._pool is not None
            future = self._pool.submit(_fetch_in_worker, partition, self._resolved,
                                       window, plan, target, self._network)
        except Exception as exc:  # any failure leaves the window to a thread
            self.slots = 0
            if not isinstance(exc, BrokenProcessPool):
                log.warning("no worker process for %s (%s): its windows stay on threads",
                            format_ref(self._resolved.ref), type(exc).__name__)
            return False
        future.add_done_callback(lambda done: self._lost(partition, done))
        return True

    def _lost(self, partition: str, future: Future[None]) -> None:
        """A window whose worker died, or that could not be handed over, never reports its
        end: report it as lost."""
        if future.cancelled() or (error := future.exception()) is None:
            return
        if isinstance(error, BrokenProcessPool):
            error = WorkerLost(
                f"the worker process fetching {partition} died before the window ended; it "
                "resumes after its last staged page")
        self._report((partition, error))

    def recover(self) -> None:
        """After a worker died: no more workers for this pool. Waits until every worker has
        exited and everything they sent has been reported, then gives the connector's
        bucket a thread lock again (a worker killed while it held the shared one would
        block the step's windows forever)."""
        self.slots = 0
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._drain()
            bucket_for(*bucket_key(self._resolved)).unshare()

    def _forward(self) -> None:
        """Hand each report to the step until every writer is gone (the workers exited and
        `close` closed the step's end). A report that cannot be read back fails its window
        instead of leaving it unended."""
        while True:
            try:
                partition, data = ForkingPickler.loads(self._reader.recv_bytes())
            except (EOFError, OSError):
                return
            except Exception:  # a garbled message from a killed worker
                continue
            try:
                what = ForkingPickler.loads(data)
            except Exception as exc:  # e.g. an error class it cannot rebuild
                if partition is None:
                    continue
                what = RuntimeError(f"{type(exc).__name__} reading back a worker's report")
            try:
                if isinstance(what, logging.LogRecord):
                    target = logging.getLogger(what.name)
                    if target.isEnabledFor(what.levelno):
                        target.handle(what)
                else:
                    self._report((partition, what))
            except Exception:  # a failing log handler must not stop the rest
                continue

    def close(self) -> None:
        """Stop the windows in flight after their current page, wait for the workers to
        exit and for their last reports to be handed over; safe to call more than once."""
        if self._stop is not None:
            self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._drain()

    def _drain(self) -> None:
        """Once the workers have exited: close the step's end of the pipe, so the forwarder
        reports what is left and ends."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._forwarder is not None:
            self._forwarder.join()
            self._forwarder = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _lowest_level(name: str) -> int:
    """The lowest level any logger at or under `name` lets through: a worker logs at it,
    and the step applies its own loggers' levels to what comes back."""
    prefix = name + "."
    levels = [logging.getLogger(name).getEffectiveLevel()]
    levels += [logger.getEffectiveLevel()
               for key, logger in list(logging.root.manager.loggerDict.items())
               if key.startswith(prefix) and isinstance(logger, logging.Logger)]
    return min(levels)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Start a worker with SIGINT blocked: the mask is inherited, so a Ctrl-C during the
    worker's imports waits until it ignores SIGINT (`_start_worker`) instead of breaking
    the pool with a traceback."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _main_left_out() -> Iterator[None]:
    """Spawn a worker without the step's `__main__`.

    A spawned process imports its parent's main module first: a user's script that calls
    `materialize` without an `if __name__ == "__main__":` guard would run again in every
    worker (and fail there), and the Dagster CLI's would load its code location again. A
    worker needs nothing from it, so while it starts `__main__` is a bare module, which
    `multiprocessing` leaves alone.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


# -- in the worker process ---------------------------------------------------------------

class _Outbox:
    """A worker's end of the report pipe: each report one message, `(partition, its
    pickle)`, so a report the step cannot rebuild still names its window."""

    def __init__(self, writer: Any, lock: Any) -> None:
        self._writer = writer
        self._lock = lock

    def put(self, partition: str | None, what: Any) -> None:
        if isinstance(what, BaseException):  # an error that cannot travel or be rebuilt
            try:
                data = bytes(ForkingPickler.dumps(what))
                ForkingPickler.loads(data)
            except Exception:  # e.g. it holds a lock, or needs keyword-only arguments
                data = bytes(ForkingPickler.dumps(
                    RuntimeError(f"{type(what).__name__} in a worker process")))
        else:
            data = bytes(ForkingPickler.dumps(what))
        message = bytes(ForkingPickler.dumps((partition, data)))
        with self._lock:
            self._writer.send_bytes(message)


_OUTBOX: _Outbox | None = None
_STOP: Any = None
_EVERYONE: Any = None
#: how long a started worker waits for the pool's others before taking windows anyway
_START_WAIT_SECONDS = 120.0
_NETWORK: tuple[WorkerNetwork, NetworkOptions] | None = None


def _start_worker(outbox: _Outbox, stop: Any, key: BucketKey, bucket: TokenBucket,
                  levels: dict[str, int], step: int, everyone: Any) -> None:
    """Initializer of each worker process."""
    global _OUTBOX, _STOP, _EVERYONE
    _die_with_parent(step)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the step decides when windows stop
    # A broken pool ends its workers with SIGTERM; a step started with SIGINT ignored (a
    # background job) has SIGTERM ignored too (Dagster maps it to SIGINT's handler), and a
    # spawned process inherits an ignored signal.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held while starting
    _OUTBOX, _STOP, _EVERYONE = outbox, stop, everyone
    adopt_bucket(key, bucket)
    handler = _ReportingHandler(outbox)
    for name, level in levels.items():  # at the step's levels: nothing sent to be dropped
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)


def _die_with_parent(step: int) -> None:
    """End this worker when the step's process (`step`) dies: Linux sends SIGKILL on
    request; elsewhere a thread looks for the parent every second."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # no prctl (macOS), no C library by that name (Windows)
        threading.Thread(target=_exit_when_orphaned, args=(step,), daemon=True,
                         name="chartly-orphan-watch").start()
    if os.getppid() != step:  # the step died while this worker started
        os._exit(1)


def _all_started() -> None:
    """The pool's first tasks: each waits until every worker has started (`_start`)."""
    try:
        _EVERYONE.wait(timeout=_START_WAIT_SECONDS)
    except threading.BrokenBarrierError:  # one did not start: go on without it
        pass


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_ORPHAN_CHECK_SECONDS)
    os._exit(1)


class _ReportingHandler(QueueHandler):
    """Log records go back to the step on the report pipe (as `(None, record)`)."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put(None, record)


def _network_options(network: WorkerNetwork) -> NetworkOptions:
    """The worker's `NetworkOptions`, built once per run: each build makes a secret resolver
    whose redactor is added to the process's log filter, which every record then runs."""
    global _NETWORK
    if _NETWORK is None or _NETWORK[0] != network:
        _NETWORK = (network, network.options())
    return _NETWORK[1]


def _fetch_in_worker(partition: str, resolved: ResolvedProfile, window: Window, plan: Plan,
                     target: WindowTarget, network: WorkerNetwork) -> None:
    assert _OUTBOX is not None
    outbox = _OUTBOX

    def progress(event: RunEvent) -> None:
        if _STOP.is_set():
            raise WindowStopped
        outbox.put(partition, event)

    outcome: WindowResult | BaseException
    try:
        outcome = fetch_or_reuse(resolved, window, plan, target, _network_options(network),
                                 progress)
    except BaseException as exc:  # handed to the step, which decides
        outcome = exc
    outbox.put(partition, outcome)
