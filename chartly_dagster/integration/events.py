"""Turn one profile's partitions into Dagster events while the windows are fetched.

Like dagster-sling's event iterator: the run reports as the work progresses. Up to N
windows are fetched at once on worker threads that share the connector's token bucket and
one connection pool; the workers only put what happened on a queue, and this generator,
on the step's own thread, turns it into Dagster events (the Dagster context is not
thread-safe). The resume point of a window in flight lives in its staging manifest, so the
event log gets progress at a bounded rate: at most one observation per interval while a
window runs (none for a window that ends within the first interval), one when the window
is complete, and a failed window's last page (where a re-execution resumes).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DagsterInstance,
    Failure,
    MaterializeResult,
    PartitionsDefinition,
    TableColumn,
    TableSchema,
)

from ..core.catalog import ResolvedProfile, check_run_scope
from ..core.errors import ChartlyError
from ..core.plan import Plan, build_plan
from ..core.refs import format_ref
from ..core.windows import Window
from ..runtime.concurrency import WindowsInFlight
from ..runtime.egress import EnvPolicy
from ..runtime.errors import WorkerLost
from ..runtime.executor import (
    NetworkOptions,
    PageProgress,
    ResumeReport,
    WindowResult,
    WindowTarget,
    fetch_or_reuse,
    forget_window,
)
from ..runtime.memory import release_freed_memory
from ..runtime.recording import RecordTo, recording_enabled
from ..runtime.secrets import SecretResolver
from ..runtime.storage import Storage
from ..runtime.workers import (
    Report,
    WindowProcesses,
    WindowStopped,
    WorkerNetwork,
    process_slots,
)
from . import metadata as md
from .checkpoints import PartitionRecord, last_materialization, run_lineage
from .metadata import PartitionMetadata
from .partitions import previous_partition_key, window_for_partition
from .recordings import recording_fields

#: windows of one run fetched at once when neither the profile nor the resource says
DEFAULT_MAX_CONCURRENT_WINDOWS = 4
#: seconds from a window's start to its first progress observation, and between two more
DEFAULT_PROGRESS_INTERVAL_SECONDS = 5.0


def column_schema(result: WindowResult) -> TableSchema:
    """The written file's Arrow schema as Dagster's column schema (shown in the UI)."""
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in
                                result.arrow_schema])


def partition_metadata(result: WindowResult, *, env: str, previous: PartitionMetadata | None,
                       previous_watermark: str | None) -> PartitionMetadata:
    """Everything a partition's materialization records; checks and resumes read it back."""
    window = result.window.to_dict()
    position = result.checkpoint.position  # the paginator's state: what the upstream served
    return PartitionMetadata(
        profile_ref=result.ref, resolved_hash=result.resolved_hash,
        plan_hash=result.plan_hash, content_hash=result.content_hash, env=env,
        window_start=window["start"], window_end=window["end"], uri=result.uri,
        records=result.records, pages=result.pages, bytes=result.bytes,
        file_bytes=result.file_bytes, requests=result.requests, retries=result.retries,
        dropped_out_of_window=result.dropped_out_of_window, duplicates=result.duplicates,
        resumed_from_page=result.resumed_from_page, reused=result.reused,
        duration_seconds=round(result.duration_seconds, 3),
        watermark=result.watermark, previous_watermark=previous_watermark,
        checkpoint=result.checkpoint.to_contract(),
        previous_checkpoint=previous.checkpoint if previous else None,
        findings=tuple(result.findings), outcome=result.outcome,
        ended_by=result.ended_by or None, capped_by=result.capped_by,
        declared_total=position.get("total"),
        records_served=position.get("fetched"), column_schema=column_schema(result),
        **recording_fields(result))


def concurrent_windows(resolved: ResolvedProfile, configured: int | None) -> int:
    """How many windows a run fetches at once: the profile's `partitions.maxConcurrentWindows`
    (what the upstream tolerates), lowered by the deployment's setting, default 4."""
    values = [v for v in (resolved.spec.partitions.max_concurrent_windows, configured)
              if v is not None]
    return min(values) if values else DEFAULT_MAX_CONCURRENT_WINDOWS


@dataclass(frozen=True)
class _WindowJob:
    """One partition of the run: its window, plan and last materialization before the run."""

    partition: str
    window: Window
    plan: Plan
    previous: PartitionRecord | None


def _fetch(resolved: ResolvedProfile, job: _WindowJob, target: WindowTarget,
           network: NetworkOptions, report: Callable[[Report], None]) -> None:
    """A window on a thread: every outcome goes to `report`."""
    try:
        report((job.partition, fetch_or_reuse(
            resolved, job.window, job.plan, target, network,
            lambda event: report((job.partition, event)))))
    except BaseException as exc:  # handed to the step's thread, which decides
        report((job.partition, exc))


@dataclass(frozen=True)
class _ResumeOnThread:
    """Queued behind a lost worker's last reports: its window goes to a thread."""

    reason: str


class _ProgressThrottle:
    """Lets through at most one page per `interval` seconds of each window, counted from the
    window's start: a window that ends within its first interval reports only its end.

    Every event costs the instance a write (about 10 ms on SQLite with its fsync), and a
    range's windows are often short: a 30-window range wrote 30 first-page observations
    that its completion observations made stale a moment later.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def start(self, partition: str) -> None:
        self._last[partition] = time.monotonic()

    def due(self, partition: str) -> bool:
        now = time.monotonic()
        if now - self._last.setdefault(partition, now) < self.interval:
            return False
        self._last[partition] = now
        return True


def _previous_watermark(instance: DagsterInstance, key: AssetKey,
                        partitions_def: PartitionsDefinition, partition: str,
                        this_run: dict[str, str | None]) -> str | None:
    """The watermark the window before this one ended at, from this run or the instance."""
    prior_key = previous_partition_key(partitions_def, partition)
    if prior_key is None:
        return None
    if prior_key in this_run:
        return this_run[prior_key]
    prior = last_materialization(instance, key, prior_key)
    return PartitionMetadata.extract(prior.metadata).watermark if prior else None


def profile_of(context: AssetExecutionContext) -> ResolvedProfile:
    """The resolved profile `@chartly_assets` left on the asset's spec."""
    spec_metadata = next(iter(context.assets_def.metadata_by_key.values()))
    resolved = spec_metadata.get(md.META_KEY_PROFILE)
    if not isinstance(resolved, ResolvedProfile):
        raise Failure(description=(
            f"asset {context.assets_def.key.to_user_string()} was not built with "
            f"@chartly_assets: no connector profile on its spec"), allow_retries=False)
    return resolved


def _failure(resolved: ResolvedProfile, failures: dict[str, BaseException],
             windows: dict[str, Window], finished: int) -> Failure:
    """One step failure naming every failed window (and keeping the finished ones' count)."""
    lines, codes = [], []
    for partition in sorted(failures):
        exc = failures[partition]
        if isinstance(exc, ChartlyError):
            lines.append(f"partition {partition}: {exc.message}")
            codes.append(exc.platform_code)
        else:  # a bug: named by type only (its text might hold anything)
            lines.append(f"partition {partition}: internal error ({type(exc).__name__})")
            codes.append("internal")
    first = min(failures)
    return Failure(
        description=(f"{format_ref(resolved.ref)}: window(s) {', '.join(sorted(failures))} "
                     f"failed, {finished} finished (recorded, reused on re-execution):\n"
                     + "\n".join(lines)),
        metadata={"failed_partitions": ", ".join(sorted(failures)),
                  "window_start": windows[first].to_dict()["start"],
                  "code": failures[first].code
                  if isinstance(failures[first], ChartlyError) else "internal"},
        allow_retries=all(code in ("unavailable", "rate_limited") for code in codes))


def connector_events(context: AssetExecutionContext, *, env: str, destination: str,
                     staging_dir: str, secrets: SecretResolver, env_policy: EnvPolicy,
                     record_responses: bool | None = None,
                     max_concurrent_windows: int | None = None,
                     window_processes: int | None = None,
                     progress_interval_seconds: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
                     ) -> Iterator[AssetObservation | MaterializeResult]:
    """Fetch every partition of the run, up to N windows at once, resuming any window left
    in flight and reusing any a failed run of this lineage finished.

    Windows run on threads while the step's process has CPU to spare (a latency-bound
    upstream). Up to `process_slots` more run in worker processes: from the start when
    `window_processes` is set, else once a sample finds the process busy (a CPU-bound
    range, which threads cannot speed up).

    Every window is attempted even when another fails. If all succeed, each gets its own
    per-partition metadata on the one `MaterializeResult` (which itself carries nothing
    partition-specific, because Dagster copies it onto every partition of a range run).
    If some fail, the finished ones are materialized one by one and the step fails naming
    the failed windows.
    """
    resolved = profile_of(context)
    key = context.assets_def.key
    partitions_def = context.assets_def.partitions_def
    if partitions_def is None:
        raise Failure(description=f"asset {key.to_user_string()} has no partitions",
                      allow_retries=False)
    try:  # the resource's env must be one the profile allows (a profile is its own scope)
        check_run_scope(resolved, env=env, tenant=resolved.ref.tenant,
                        project=resolved.ref.project)
        network = NetworkOptions(env, secrets, env_policy)
        client = network.open_client(resolved)  # one connection pool for every window
    except ChartlyError as exc:
        raise Failure(description=f"{format_ref(resolved.ref)}: {exc.message}",
                      allow_retries=False) from exc
    instance = context.instance
    storage = Storage.parse(destination)
    record = recording_enabled(resolved.spec, env, record_responses)
    lineage = run_lineage(context)
    jobs: list[_WindowJob] = []
    for partition in context.partition_keys:
        window = window_for_partition(partitions_def, partition)
        jobs.append(_WindowJob(partition, window, build_plan(resolved, window),
                               last_materialization(instance, key, partition)))
    plan_hashes = {job.partition: job.plan.plan_hash for job in jobs}
    targets = {job.partition: WindowTarget(storage, job.partition, resumable=True,
                                           staging_root=staging_dir, lineage=lineage)
               for job in jobs}
    workers = min(len(jobs), concurrent_windows(resolved, max_concurrent_windows)) or 1
    # Windows share the connector's client (one pool); a recorded window wraps its own.
    shared = NetworkOptions(env, secrets, env_policy, client=client,
                            recording=RecordTo(storage) if record else None)
    inbox: queue.SimpleQueue[Report | tuple[str, _ResumeOnThread]] = queue.SimpleQueue()
    results: dict[str, WindowResult] = {}
    failures: dict[str, BaseException] = {}
    throttle = _ProgressThrottle(progress_interval_seconds)
    slots = process_slots(window_processes, workers)
    eager = window_processes is not None  # else processes only once the process is busy
    if workers > 1:
        context.log.info(
            f"fetching {len(jobs)} window(s), up to {workers} at once while the process has "
            f"CPU to spare" + (f", up to {slots} of them in worker processes"
                               + ("" if eager else " while the step's process is busy")
                               if slots else ""))
    stopping = threading.Event()

    def report(item: Report) -> None:
        if stopping.is_set() and isinstance(item[1], PageProgress):
            raise WindowStopped  # ends that window after a staged page (it resumes later)
        inbox.put(item)

    unreported: dict[str, PageProgress] = {}  # each window's last page not yet observed

    def progress(partition: str) -> AssetObservation:
        page = unreported.pop(partition)
        return AssetObservation(asset_key=key, partition=partition, metadata={
            md.OBSERVATION_KIND: md.PAGE_OBSERVATION, md.PAGE: page.page,
            md.RECORDS: page.records, md.BYTES: page.bytes,
            md.PLAN_HASH: plan_hashes[partition]})

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chartly-window")
    processes = WindowProcesses(slots, resolved, inbox.put)
    in_flight = WindowsInFlight(workers)
    waiting = list(reversed(jobs))  # popped in partition order
    in_process: set[str] = set()  # windows in flight in worker processes
    most = most_in_processes = 0  # windows in flight at once, at most
    try:
        while len(results) + len(failures) < len(jobs):
            running = len(jobs) - len(waiting) - len(results) - len(failures)
            thread_target = in_flight.target()  # sampled here: the wait below never spins
            while waiting and running < workers:
                job = waiting[-1]
                if (len(in_process) < processes.slots and (eager or in_flight.cpu_bound())
                        and processes.submit(job.partition, job.window, job.plan,
                                             targets[job.partition],
                                             lambda: WorkerNetwork.of(shared, resolved))):
                    in_process.add(job.partition)
                elif running - len(in_process) < thread_target:
                    pool.submit(_fetch, resolved, job, targets[job.partition], shared, report)
                else:
                    break
                waiting.pop()
                throttle.start(job.partition)
                running += 1
            most = max(most, running)
            most_in_processes = max(most_in_processes, len(in_process))
            try:  # wake for the next sample too: held requests report nothing
                partition, item = inbox.get(timeout=in_flight.seconds_to_next_sample()
                                            if waiting else None)
            except queue.Empty:
                continue
            if partition in results or partition in failures:
                continue  # a worker lost after its window ended
            if isinstance(item, (WindowResult, BaseException)):
                in_process.discard(partition)
            if isinstance(item, WorkerLost):
                # The pool is broken. Once its workers are gone, all they sent is in the
                # inbox, ahead of the marker: a window that ended anyway is not fetched again.
                processes.recover()
                inbox.put((partition, _ResumeOnThread(item.message)))
                continue
            if isinstance(item, _ResumeOnThread):  # after its last staged page
                waiting.append(next(j for j in jobs if j.partition == partition))
                context.log.warning(f"{partition}: {item.reason}; resuming it on a thread")
                continue
            if isinstance(item, PageProgress):
                unreported[partition] = item
                if throttle.due(partition):
                    yield progress(partition)
            elif isinstance(item, ResumeReport):
                log = context.log.warning if item.staging_lost else context.log.info
                log(f"{partition}: {item.message}")
            elif isinstance(item, WindowResult):
                results[partition] = item
                unreported.pop(partition, None)  # its completion says more
                release_freed_memory()  # the window's buffers, before the next one fills
                how = "reused (verified) from the failed run" if item.reused else "fetched"
                context.log.info(f"{partition}: {item.records} records in {item.pages} pages "
                                 f"{how} -> {item.uri}")
                yield AssetObservation(asset_key=key, partition=partition, metadata={
                    md.OBSERVATION_KIND: md.WINDOW_COMPLETE_OBSERVATION,
                    md.PLAN_HASH: item.plan_hash, md.CONTENT_HASH: item.content_hash,
                    md.RECORDS: item.records, md.PAGE: item.pages})
            else:
                failures[partition] = item
                if partition in unreported:  # how far it got: where a re-execution resumes
                    yield progress(partition)
                context.log.error(f"{partition}: window failed: " + (
                    item.message if isinstance(item, ChartlyError) else type(item).__name__))
    finally:
        # Normally every window has ended here. A step torn down early (the run was
        # terminated) cancels the windows not started and stops the others after their
        # current page, so the pool is gone before the client closes.
        stopping.set()
        try:
            processes.close()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            client.close()
    if workers > 1:
        context.log.info(f"at most {most} window(s) were in flight at once"
                         + (f", at most {most_in_processes} in worker processes"
                            if slots else ""))
    watermarks = {p: r.watermark for p, r in results.items()}
    recorded = []
    for job in jobs:  # in partition order, so `previous_watermark` never depends on timing
        result = results.get(job.partition)
        if result is None:
            continue
        meta = partition_metadata(
            result, env=env,
            previous_watermark=_previous_watermark(instance, key, partitions_def,
                                                   job.partition, watermarks),
            previous=PartitionMetadata.extract(job.previous.metadata) if job.previous else None)
        recorded.append((job.partition, meta))
    if failures:
        for partition, meta in recorded:  # the finished windows keep their work
            context.log_event(AssetMaterialization(asset_key=key, partition=partition,
                                                   metadata=meta.to_metadata()))
        raise _failure(resolved, failures, {j.partition: j.window for j in jobs}, len(results))
    for partition, meta in recorded:
        context.add_asset_metadata(meta.to_metadata(), asset_key=key, partition_key=partition)
    yield MaterializeResult(asset_key=key)
    for job in jobs:  # materialized: a later run of these windows fetches afresh
        forget_window(resolved, job.window, targets[job.partition])
