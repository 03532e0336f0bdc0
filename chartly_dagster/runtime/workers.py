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

Everything a window reports travels back on one queue, in order: its pages, then its
result or error, and its log records (audit, metrics) to be handled by the step's own
loggers. Workers are spawned (a clean interpreter: no step threads or locks copied), ignore
Ctrl-C (the step stops them after their current page, as it stops threads), and ask the
kernel to kill them when the step's process dies.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from logging.handlers import QueueHandler
from pathlib import Path
from typing import Any

from ..core.catalog import ResolvedProfile
from ..core.plan import Plan
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


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, lowered by its cgroup's CPU quota (a
    container's CPU limit), which the affinity does not show."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        try:
            text = Path(path).read_text().split()
            if path.endswith("cpu.max"):
                quota, period = text
            else:
                quota = text[0]
                period = Path(path).with_name("cpu.cfs_period_us").read_text().strip()
            if quota not in ("max", "-1"):
                return max(1, min(cpus, math.ceil(int(quota) / int(period))))
        except (OSError, ValueError):
            continue
    return cpus


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
        self._queue: Any = None
        self._stop: Any = None

    def _start(self) -> ProcessPoolExecutor:
        context = self._context
        self._queue, self._stop = context.SimpleQueue(), context.Event()
        key = bucket_key(self._resolved)
        bucket = bucket_for(*key)
        bucket.share()  # before any worker inherits it
        level = logging.getLogger("chartly").getEffectiveLevel()
        pool = ProcessPoolExecutor(
            max_workers=self.slots, mp_context=context, initializer=_start_worker,
            initargs=(self._queue, self._stop, key, bucket, level))
        self._forwarder = threading.Thread(target=self._forward, name="chartly-workers",
                                           daemon=True)
        self._forwarder.start()
        return pool

    def submit(self, partition: str, window: Window, plan: Plan, target: WindowTarget,
               network: WorkerNetwork) -> bool:
        """Hand a window to a worker; False (and no more slots) when the pool is broken (a
        worker died), so the caller fetches it on a thread instead."""
        if self._pool is None:
            self._pool = self._start()
        try:
            with _main_left_out():  # a worker starts (spawns) within `submit`
                future = self._pool.submit(_fetch_in_worker, partition, self._resolved,
                                           window, plan, target, network)
        except BrokenProcessPool:
            self.slots = 0
            return False
        future.add_done_callback(lambda done: self._lost(partition, done))
        return True

    def _lost(self, partition: str, future: Future[None]) -> None:
        """A window whose worker died, or that could not be handed over, never reports its
        end: report it as failed."""
        if future.cancelled() or (error := future.exception()) is None:
            return
        if isinstance(error, BrokenProcessPool):
            error = WorkerLost(
                f"the worker process fetching {partition} died before the window ended; it "
                "resumes after its last staged page when the run is re-executed")
        self._report((partition, error))

    def _forward(self) -> None:
        while (item := self._queue.get()) is not None:
            partition, what = item
            if isinstance(what, logging.LogRecord):
                logging.getLogger(what.name).handle(what)
            else:
                self._report((partition, what))

    def close(self) -> None:
        if self._pool is None:
            return
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.put(None)
        assert self._forwarder is not None
        self._forwarder.join()
        self._queue.close()


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

_QUEUE: Any = None
_STOP: Any = None


def _start_worker(queue: Any, stop: Any, key: BucketKey, bucket: TokenBucket,
                  level: int) -> None:
    """Initializer of each worker process."""
    global _QUEUE, _STOP
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the step decides when windows stop
    _QUEUE, _STOP = queue, stop
    adopt_bucket(key, bucket)
    logger = logging.getLogger("chartly")
    logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(_ReportingHandler(queue))


def _die_with_parent() -> None:
    """Ask Linux for SIGKILL when the step's process dies (elsewhere: the pool's pipes
    break and an idle worker exits)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


class _ReportingHandler(QueueHandler):
    """Log records go back to the step on the report queue (as `(None, record)`)."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put((None, record))


def _fetch_in_worker(partition: str, resolved: ResolvedProfile, window: Window, plan: Plan,
                     target: WindowTarget, network: WorkerNetwork) -> None:
    def progress(event: RunEvent) -> None:
        if _STOP.is_set():
            raise WindowStopped
        _QUEUE.put((partition, event))

    outcome: WindowResult | BaseException
    try:
        outcome = fetch_or_reuse(resolved, window, plan, target, network.options(), progress)
    except BaseException as exc:  # handed to the step, which decides
        outcome = exc
    try:
        _QUEUE.put((partition, outcome))
    except (pickle.PicklingError, TypeError, AttributeError):  # an error that cannot travel
        _QUEUE.put((partition, RuntimeError(f"{type(outcome).__name__} in a worker process")))
