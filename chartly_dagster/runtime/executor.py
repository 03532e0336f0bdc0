"""The executor: drive one window's plan page by page into one Parquet file.

This is the single place where a plan meets the network. The CLI `run` and the Dagster
assets both call `fetch_window`, so paging, envelopes and hashes exist exactly once. Its
inputs come in a few typed values: the built `Plan`, where the file goes (`WindowTarget`),
how to reach the upstream (`NetworkOptions`) and the seams tests replace (`Seams`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.canonical import format_rfc3339
from ..core.catalog import ResolvedProfile
from ..core.errors import (
    ChartlyError,
    InvalidArgument,
    PaginationViolation,
    UpstreamError,
)
from ..core.plan import Plan
from ..core.refs import format_ref
from ..core.windows import Window
from .arrays import bool_array
from .decoding import decode_json
from .egress import EnvPolicy, Resolver
from .envelope import (
    ENVELOPE_ARROW_SCHEMA,
    EnvelopeBuilder,
    IdSet,
    event_id_keys,
    validate_envelopes,
)
from .http import GuardedClient, build_client
from .paginate import STOPPED_ON_FINDING, PageInfo, PageRequest, Paginator, read_records
from .ratelimit import bucket_for, bucket_key
from .recording import PageClient, RecordedWindow, RecordTo, ReplayFrom, WindowRecording
from .retry import RetryBudget, RetryPolicy, classify_response
from .secrets import SecretResolver
from .storage import PageStaging, Storage, WindowFileWriter, file_content_hash
from .telemetry import audit, metrics

log = logging.getLogger("chartly.runtime")
Clock = Callable[[], datetime]
#: cursors kept in a checkpoint for repeat detection after a resume
CHECKPOINT_SEEN = 16


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Checkpoint:
    """Where a window stands after a page: the one checkpoint type, resumable as is.

    `to_contract` / `from_contract` are the one conversion to and from the stored form,
    `{scope, checkpoint_type, payload, updated_at}`, kept in Dagster metadata.
    """

    scope: dict[str, str]
    checkpoint_type: str
    position: dict[str, Any]
    pages: int
    records: int
    sequence_next: int
    dropped: int
    bytes: int
    watermark: str | None
    updated_at: str
    #: responses recorded so far (recorded windows only), where a resumed recording continues
    responses: int | None = None
    #: the finished window's response hash (recorded windows only)
    response_hash: str | None = None

    def to_contract(self) -> dict[str, Any]:
        payload = {"position": self.position, "pages": self.pages, "records": self.records,
                   "sequence_next": self.sequence_next, "dropped": self.dropped,
                   "bytes": self.bytes, "watermark": self.watermark}
        if self.responses is not None:
            payload["responses"] = self.responses
        if self.response_hash is not None:
            payload["response_hash"] = self.response_hash
        return {"scope": dict(self.scope), "checkpoint_type": self.checkpoint_type,
                "payload": payload, "updated_at": self.updated_at}

    @classmethod
    def from_contract(cls, data: dict[str, Any]) -> Checkpoint:
        """Raises KeyError, TypeError or ValueError when `data` is not a checkpoint."""
        payload = data["payload"]
        return cls(scope={str(k): str(v) for k, v in dict(data["scope"]).items()},
                   checkpoint_type=str(data["checkpoint_type"]),
                   position=dict(payload["position"]), pages=int(payload["pages"]),
                   records=int(payload["records"]),
                   sequence_next=int(payload["sequence_next"]),
                   dropped=int(payload["dropped"]), bytes=int(payload["bytes"]),
                   watermark=payload["watermark"], updated_at=str(data["updated_at"]),
                   responses=(int(payload["responses"]) if "responses" in payload else None),
                   response_hash=payload.get("response_hash"))


@dataclass(frozen=True)
class PageProgress:
    """Reported after each page; with `staged`, `checkpoint` is a durable resume point."""

    page: int
    records: int
    bytes: int
    checkpoint: Checkpoint
    staged: bool


@dataclass(frozen=True)
class ResumeReport:
    """How a window given a checkpoint started: after its page, or over from page 0."""

    requested_page: int
    resumed_from_page: int
    message: str

    @property
    def staging_lost(self) -> bool:
        return self.resumed_from_page != self.requested_page


RunEvent = PageProgress | ResumeReport


@dataclass(frozen=True)
class WindowTarget:
    """Where a window's file goes and how the window is kept while in flight.

    `resumable` stages every page (under `staging_root`, default next to local files) with
    a manifest holding the resume point, so the window can resume after its last page; a
    finished window's manifest records its file for `reusable_window`, under `lineage`
    (e.g. a Dagster run's root run id: only a re-execution of that run may reuse it).
    """

    storage: Storage
    partition: str | None = None
    resumable: bool = False
    staging_root: str | None = None
    lineage: str | None = None

    @classmethod
    def at(cls, destination: str, **options: Any) -> WindowTarget:
        return cls(Storage.parse(destination), **options)

    def staging(self, relative: str) -> PageStaging:
        root = Path(self.staging_root) if self.staging_root else self.storage.staging_root()
        return PageStaging(root / relative.removesuffix(".parquet"), root)


@dataclass(frozen=True)
class NetworkOptions:
    """How the window reaches its upstream: the env, its secrets and the env's policy;
    `recording` records every response (`RecordTo`) or replaces the network with a
    recording (`ReplayFrom`).

    `client`, if given, is an open client built with the same settings and shared by
    windows fetched at once (one connection pool); the caller closes it.
    """

    env: str
    secrets: SecretResolver | None = None
    env_policy: EnvPolicy | None = None
    recording: RecordTo | ReplayFrom | None = None
    client: GuardedClient | None = None

    def open_client(self, resolved: ResolvedProfile, seams: Seams | None = None
                    ) -> GuardedClient:
        """A guarded client for `resolved` with these settings (the caller closes it)."""
        seams = seams or Seams()
        return build_client(resolved, env=self.env, secrets=self.secrets,
                            env_policy=self.env_policy, resolver=seams.resolver,
                            verify=seams.verify)


@dataclass(frozen=True)
class Seams:
    """What tests replace: time, randomness, name resolution and TLS trust."""

    clock: Clock = utc_now
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None
    resolver: Resolver | None = None
    verify: Any = None


@dataclass(frozen=True)
class WindowResult:
    """Everything a window produced; the CLI prints it and Dagster stores it as metadata."""

    ref: str
    resolved_hash: str
    plan_hash: str
    window: Window
    outcome: str
    #: how the window ended: one of paginate.EXPLICIT_ENDS, a cap (`cap:maxPages`, ...) or
    #: `stopped_on_finding`
    ended_by: str
    records: int
    pages: int
    bytes: int
    requests: int
    retries: int
    dropped_out_of_window: int
    duplicates: int
    findings: list[dict[str, Any]]
    content_hash: str
    checkpoint: Checkpoint
    uri: str
    file_bytes: int
    duration_seconds: float
    arrow_schema: pa.Schema = field(repr=False)
    watermark: str | None
    resumed_from_page: int = 0
    capped_by: str | None = None
    recorded: RecordedWindow | None = None
    #: the file was written by an earlier run of the same lineage and verified, not fetched
    reused: bool = False

    _MANIFEST_FIELDS = ("outcome", "ended_by", "records", "pages", "bytes", "requests",
                        "retries", "dropped_out_of_window", "duplicates", "findings",
                        "content_hash", "uri", "file_bytes", "duration_seconds", "watermark",
                        "resumed_from_page", "capped_by")

    def to_manifest(self) -> dict[str, Any]:
        """What a finished window's manifest keeps to rebuild this result without fetching."""
        out = {name: getattr(self, name) for name in self._MANIFEST_FIELDS}
        out["checkpoint"] = self.checkpoint.to_contract()
        return out

    @classmethod
    def from_manifest(cls, data: dict[str, Any], resolved: ResolvedProfile, window: Window,
                      plan: Plan) -> WindowResult:
        """The result a manifest recorded, marked `reused`; KeyError/TypeError/ValueError
        when `data` is not one."""
        values = {name: data[name] for name in cls._MANIFEST_FIELDS}
        values["findings"] = list(values["findings"])
        return cls(ref=format_ref(resolved.ref), resolved_hash=resolved.hash,
                   plan_hash=plan.plan_hash, window=window,
                   checkpoint=Checkpoint.from_contract(data["checkpoint"]),
                   arrow_schema=ENVELOPE_ARROW_SCHEMA, reused=True, **values)

    def results_section(self) -> dict[str, Any]:
        """The `results` section of the output contract (no wall-clock timestamps)."""
        checkpoint = {k: v for k, v in self.checkpoint.to_contract().items()
                      if k != "updated_at"}
        section = {"outcome": self.outcome, "ended_by": self.ended_by,
                   "records": self.records, "pages": self.pages,
                   "bytes": self.bytes, "requests": self.requests, "retries": self.retries,
                   "dropped_out_of_window": self.dropped_out_of_window,
                   "duplicates": self.duplicates, "content_hash": self.content_hash,
                   "checkpoint": checkpoint, "output": self.uri, "file_bytes": self.file_bytes,
                   "duration_seconds": round(self.duration_seconds, 3),
                   "watermark": self.watermark, "resumed_from_page": self.resumed_from_page,
                   "capped_by": self.capped_by, "findings": self.findings}
        if self.recorded is not None:
            recorded = self.recorded
            section.update({"response_hash": recorded.response_hash,
                            "recording": {"uri": recorded.uri, "bytes": recorded.bytes,
                                          "responses": recorded.responses,
                                          "replayed": recorded.replayed,
                                          "content_hash": recorded.content_hash}})
        return section


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def window_file_name(resolved: ResolvedProfile, window: Window, partition: str | None) -> str:
    """`tenant/project/connector/<partition>.parquet`, or `<start>--<end>.parquet` without
    one, so two windows that share a start never share a file."""
    ref = resolved.ref
    stem = partition or f"{format_rfc3339(window.start)}--{format_rfc3339(window.end)}"
    return f"{ref.tenant}/{ref.project}/{ref.name}/{_safe(stem)}.parquet"


MANIFEST_IN_FLIGHT = "in_flight"
MANIFEST_COMPLETE = "complete"


def window_staging(resolved: ResolvedProfile, window: Window, target: WindowTarget
                   ) -> PageStaging:
    """The staging folder (pages and manifest) of one window at `target`."""
    return target.staging(window_file_name(resolved, window, target.partition))


def staged_checkpoint(resolved: ResolvedProfile, window: Window, plan: Plan,
                      target: WindowTarget) -> Checkpoint | None:
    """The resume point of a window left in flight by the same plan, from its manifest.

    A manifest of another plan (the profile changed in between) is ignored: resuming its
    cursor would mix two plans in one file. So is one this version cannot read.
    """
    manifest = window_staging(resolved, window, target).read_manifest()
    if (manifest is None or manifest.get("state") != MANIFEST_IN_FLIGHT
            or manifest.get("plan_hash") != plan.plan_hash):
        return None
    try:
        return Checkpoint.from_contract(manifest["checkpoint"])
    except (KeyError, TypeError, ValueError):
        return None


def reusable_window(resolved: ResolvedProfile, window: Window, plan: Plan,
                    target: WindowTarget) -> WindowResult | None:
    """The finished file of an earlier run of the same lineage and plan, if it is intact.

    The file is streamed and hashed again: a file that changed or vanished since its
    manifest was written is not reused (the window is fetched anew).
    """
    manifest = window_staging(resolved, window, target).read_manifest()
    if (manifest is None or target.lineage is None
            or manifest.get("state") != MANIFEST_COMPLETE
            or manifest.get("plan_hash") != plan.plan_hash
            or manifest.get("lineage") != target.lineage):
        return None
    try:
        result = WindowResult.from_manifest(manifest["result"], resolved, window, plan)
    except (KeyError, TypeError, ValueError):
        return None
    if file_content_hash(result.uri) != result.content_hash:
        log.warning("%s: the file a finished run recorded is missing or changed; fetching "
                    "the window again", result.uri)
        return None
    return result


def fetch_or_reuse(resolved: ResolvedProfile, window: Window, plan: Plan,
                   target: WindowTarget, network: NetworkOptions,
                   on_progress: Callable[[RunEvent], None]) -> WindowResult:
    """One window of a range: the verified file a failed run of this lineage finished, or
    the window fetched, resuming after its last staged page."""
    result = reusable_window(resolved, window, plan, target)
    if result is None:
        result = fetch_window(resolved, window, plan, target=target, network=network,
                              resume=staged_checkpoint(resolved, window, plan, target),
                              on_progress=on_progress)
    return result


def forget_window(resolved: ResolvedProfile, window: Window, target: WindowTarget) -> None:
    """Drop a window's staging and manifest once its result is recorded elsewhere."""
    window_staging(resolved, window, target).clear()


class _WindowRun:
    """Mutable state of one window while it is fetched; keeps `fetch_window` readable."""

    def __init__(self, resolved: ResolvedProfile, window: Window, plan: Plan,
                 partition: str | None, clock: Clock,
                 recording: WindowRecording | None = None) -> None:
        self.resolved = resolved
        self.recording = recording
        self.window = window
        self.plan = plan
        self.partition = partition
        self.clock = clock
        self.builder = EnvelopeBuilder(resolved, window)
        self.ids = IdSet()
        self.pages = self.records = self.bytes = self.dropped = 0
        self.duplicates = 0
        self.sequence = 0
        self.findings: list[dict[str, Any]] = []
        self.watermark_us: int | None = None
        self.outcome = "complete"
        self.capped_by: str | None = None
        self.resumed_from_page = 0
        self.recording_resumed = 0  # recorded responses a resume keeps

    def cap(self, name: str, message: str) -> None:
        self.outcome = "capped"
        self.capped_by = name
        self.findings.append({"code": "cap_reached", "message": message})

    def observe_watermark(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            top = pc.max(batch.column("occurred_at").cast(pa.int64())).as_py()
            self.watermark_us = top if self.watermark_us is None else max(self.watermark_us, top)

    @property
    def watermark(self) -> str | None:
        if self.watermark_us is None:
            return None
        return format_rfc3339(datetime.fromtimestamp(self.watermark_us / 1e6, UTC))

    def checkpoint(self, paginator: Paginator) -> Checkpoint:
        ref = self.resolved.ref
        # Only the latest cursors are kept for repeat detection after a resume.
        position = dict(paginator.state)
        if "seen" in position:
            position["seen"] = position["seen"][-CHECKPOINT_SEEN:]
        return Checkpoint(
            scope={"tenant": ref.tenant, "project": ref.project, "connector": ref.name,
                   "partition": self.partition or format_rfc3339(self.window.start)},
            checkpoint_type=paginator.checkpoint_type, position=position, pages=self.pages,
            records=self.records, sequence_next=self.sequence, dropped=self.dropped,
            bytes=self.bytes, watermark=self.watermark,
            updated_at=format_rfc3339(self.clock().replace(microsecond=0)),
            responses=self.recording.count if self.recording is not None else None)


def _fetch_page(client: PageClient, request: PageRequest, clock: Clock,
                counter: list[int]) -> tuple[Any, httpx.Headers, str, int]:
    counter[0] += 1
    response = client.get(request.url, request.params or None)
    error = classify_response(response, clock())
    if error is not None:
        raise error
    body = decode_json(response.content, response.url)
    return body, response.headers, response.url, len(response.content)


def fetch_window(resolved: ResolvedProfile, window: Window, plan: Plan, *,
                 target: WindowTarget, network: NetworkOptions,
                 resume: Checkpoint | None = None,
                 on_progress: Callable[[RunEvent], None] | None = None,
                 seams: Seams | None = None) -> WindowResult:
    """Fetch `window` by `plan` into one Parquet file at `target`; raise a ChartlyError on
    failure.

    On failure nothing is written at the final path and, for a resumable target, staged
    pages stay for a resume; `on_progress` sees how a resume started and a checkpoint
    after every page, so a caller can persist it.
    """
    if plan.body["resolved_profile_hash"] != resolved.hash:
        raise ValueError("fetch_window: the plan was built from another resolved profile")
    seams = seams or Seams()
    started = time.monotonic()
    ref_text = format_ref(resolved.ref)
    partition = target.partition
    audit("connector.profile.resolved", ref=ref_text, resolved_hash=resolved.hash,
          source=resolved.source_path)
    audit("connector.run.started", ref=ref_text, window=window.to_dict(),
          plan_hash=plan.plan_hash, partition=partition)
    relative = window_file_name(resolved, window, partition)
    staging = target.staging(relative)
    recording = (network.recording.session(resolved, plan, window, relative, staging.folder)
                 if network.recording is not None else None)
    # A replay has nothing to wait for: no rate budget, no backoff.
    sleep = _no_wait if recording is not None and recording.offline else seams.sleep
    run = _WindowRun(resolved, window, plan, partition, seams.clock, recording)
    budget = RetryBudget(resolved.spec.retry.budget_per_window)
    counter = [0]
    writer: WindowFileWriter | None = None
    recorded: RecordedWindow | None = None

    def connect() -> GuardedClient:
        return network.open_client(resolved, seams)

    try:
        # A recording wraps its own client; otherwise windows fetched at once share one.
        shared = network.client
        with (recording.open_client(connect) if recording is not None
              else contextlib.nullcontext(shared) if shared is not None
              else connect()) as client:
            writer = _open_writer(target, relative, plan, window)
            paginator = _start(resolved, plan, target, staging, run, resume, writer,
                               on_progress)
            if recording is not None:
                recording.begin(run.recording_resumed)
            retry = RetryPolicy(resolved.spec.retry, budget, sleep=sleep, rng=seams.rng,
                                on_retry=lambda exc, wait: log.info(
                                    "retrying after %s (%s) in %.2fs", exc.code, exc.message,
                                    wait))
            _drive(client, paginator, staging if target.resumable else None, run, writer,
                   retry, counter, on_progress, sleep)
        uri, content_hash, file_bytes = writer.commit()
        checkpoint = run.checkpoint(paginator)
        if recording is not None:
            recorded = recording.finish(content_hash=content_hash, records=run.records,
                                        pages=run.pages)
            checkpoint = replace(checkpoint, responses=recorded.responses,
                                 response_hash=recorded.response_hash)
        if target.lineage is None:  # nobody may reuse this window: nothing to keep
            staging.clear()
    except Exception as exc:
        if writer is not None:
            writer.abort()
        if recording is not None:
            recording.abort(keep=target.resumable)
            if not target.resumable:
                staging.clear()  # the folders the recording was staged in
        # Any failure ends the run: a started run always gets its failed event. Only our
        # own errors' messages are logged (they never hold a secret); others by type only.
        code, message = ((exc.code, exc.message) if isinstance(exc, ChartlyError)
                         else ("internal", type(exc).__name__))
        # Every retry followed a failed request; an upstream error adds the last one.
        failed = budget.used + (1 if isinstance(exc, UpstreamError) else 0)
        metrics(ref_text, requests=counter[0], failed=failed, bytes=run.bytes,
                pages=run.pages, retries=budget.used, seconds=time.monotonic() - started)
        audit("connector.run.failed", ref=ref_text, window=window.to_dict(), code=code,
              message=message, pages=run.pages, partition=partition)
        raise
    duration = time.monotonic() - started
    metrics(ref_text, requests=counter[0], failed=budget.used, bytes=run.bytes,
            pages=run.pages, retries=budget.used, seconds=duration)
    audit("connector.run.succeeded", ref=ref_text, window=window.to_dict(),
          outcome=run.outcome, records=run.records, content_hash=content_hash,
          partition=partition)
    result = WindowResult(
        ref=ref_text, resolved_hash=resolved.hash, plan_hash=plan.plan_hash, window=window,
        outcome=run.outcome, ended_by=paginator.ended_by or "", records=run.records,
        pages=run.pages, bytes=run.bytes,
        requests=counter[0], retries=budget.used, dropped_out_of_window=run.dropped,
        duplicates=run.duplicates, findings=sorted(run.findings, key=lambda f: f["code"]),
        content_hash=content_hash, checkpoint=checkpoint, uri=uri, file_bytes=file_bytes,
        duration_seconds=duration, arrow_schema=ENVELOPE_ARROW_SCHEMA,
        watermark=run.watermark, resumed_from_page=run.resumed_from_page,
        capped_by=run.capped_by, recorded=recorded)
    if target.resumable and target.lineage is not None:
        # The pages are in the file now; the manifest says where it is, for a re-execution.
        staging.drop_pages()
        staging.write_manifest({"state": MANIFEST_COMPLETE, "plan_hash": plan.plan_hash,
                                "lineage": target.lineage, "result": result.to_manifest()})
    return result


def _no_wait(seconds: float) -> None:
    """The sleep of a replay: recorded waits are not waited again."""


def _open_writer(target: WindowTarget, relative: str, plan: Plan,
                 window: Window) -> WindowFileWriter:
    """The window's file writer, after removing temp files a killed run of this window
    left behind."""
    removed = target.storage.remove_stale_temp(relative)
    if removed:
        log.info("removed %d temp file(s) left by an earlier run of %s", removed, relative)
    return target.storage.writer(relative, plan_hash=plan.plan_hash,
                                 check=lambda table: _check_contract(table, window))


def _start(resolved: ResolvedProfile, plan: Plan, target: WindowTarget, staging: PageStaging,
           run: _WindowRun, resume: Checkpoint | None, writer: WindowFileWriter,
           on_progress: Callable[[RunEvent], None] | None) -> Paginator:
    """A fresh paginator, or one restored after the checkpoint's page if its pages are
    still staged; a checkpoint whose pages are gone is reported and the window starts over."""
    auth = resolved.spec.auth
    drop = frozenset(filter(None, [auth.credential_param()]))
    staged = len(staging.pages()) if target.resumable else 0
    if run.recording is not None and resume is not None and not run.recording.can_resume(
            resume.responses):
        staged = 0  # the recording cannot continue where the pages do: fetch them again
    if resume is None or not target.resumable or staged < resume.pages:
        if target.resumable:
            staging.reset()
        if resume is not None:
            report = ResumeReport(
                resume.pages, 0, f"staging lost, fetching from page 0: the checkpoint is "
                f"after page {resume.pages} but {staged} page(s) are staged")
            log.warning("%s", report.message)
            if on_progress is not None:
                on_progress(report)
        return Paginator(resolved.spec, plan, drop)
    staging.keep_first(resume.pages)
    for batch in staging.batches():
        run.ids.add_new(event_id_keys(batch.column("event_id")))
        run.observe_watermark(batch)
        writer.submit(batch)
    run.pages, run.records, run.resumed_from_page = resume.pages, resume.records, resume.pages
    run.sequence, run.dropped, run.bytes = resume.sequence_next, resume.dropped, resume.bytes
    run.recording_resumed = resume.responses or 0
    report = ResumeReport(resume.pages, resume.pages, f"resuming after page {resume.pages} "
                          f"({resume.records} records staged)")
    log.info("%s", report.message)
    if on_progress is not None:
        on_progress(report)
    return Paginator(resolved.spec, plan, drop, state=resume.position)


def _drive(client: PageClient, paginator: Paginator, staging: PageStaging | None,
           run: _WindowRun, writer: WindowFileWriter, retry: RetryPolicy, counter: list[int],
           on_progress: Callable[[RunEvent], None] | None,
           sleep: Callable[[float], None]) -> None:
    spec = run.resolved.spec
    limits = run.plan.limits
    bucket = bucket_for(*bucket_key(run.resolved))
    max_wait = spec.retry.max_retry_after_ms / 1000
    while (request := paginator.current) is not None:
        cap = _cap_reached(run, limits)
        if cap:
            run.cap(*cap)
            paginator.stop(_CAP_ENDED_BY[cap[0]])
            return

        def attempt(request: PageRequest = request) -> tuple[Any, httpx.Headers, str, int]:
            if run.recording is None or not run.recording.offline:
                bucket.acquire(max_wait=max_wait, sleep=sleep)
            return _fetch_page(client, request, run.clock, counter)

        body, headers, final_url, size = retry.call(attempt)
        records = read_records(body, spec, client.redactor.scrub)
        page = PageInfo(request, body, headers, final_url, records)
        stop_after = False
        try:
            paginator.advance(page)
        except PaginationViolation as exc:
            if spec.pagination.on_violation == "error":
                raise
            run.findings.append({"code": exc.code, "message": exc.message})
            paginator.stop(STOPPED_ON_FINDING)
            run.outcome = "stopped_on_finding"
            stop_after = True
        room = limits["max_records"] - run.records
        if len(records) > room:
            records = records[:room]
            paginator.stop(_CAP_ENDED_BY["max_records"])
            run.cap("max_records", f"max_records {limits['max_records']} reached")
        batch, keys, dropped = run.builder.build(
            records, sequence_start=run.sequence, provenance_uri=final_url,
            collected_at=run.clock())
        del records, body, page
        assigned = batch.num_rows  # sequence numbers handed out, duplicates included
        batch = _dedupe(run, batch, keys)
        run.dropped += dropped
        run.sequence += assigned
        run.records += batch.num_rows
        run.bytes += size
        run.observe_watermark(batch)
        if staging is not None:  # only a resumable target stages pages
            staging.stage(run.pages, batch)
        writer.submit(batch)
        run.pages += 1
        checkpoint = run.checkpoint(paginator)
        if staging is not None:  # the page first, then the resume point that counts it
            staging.write_manifest({"state": MANIFEST_IN_FLIGHT,
                                    "plan_hash": run.plan.plan_hash,
                                    "checkpoint": checkpoint.to_contract()})
        if on_progress is not None:
            on_progress(PageProgress(run.pages, run.records, run.bytes, checkpoint,
                                     staging is not None))
        if stop_after:
            return


#: how a window stopped at each cap reads in `ended_by` (the profile's key names)
_CAP_ENDED_BY = {"max_pages": "cap:maxPages", "max_records": "cap:maxRecords",
                 "max_bytes": "cap:maxBytes"}


def _cap_reached(run: _WindowRun, limits: dict[str, int]) -> tuple[str, str] | None:
    """The cap (name, message) that stops the window before its next page, if any."""
    for name, done in (("max_pages", run.pages), ("max_records", run.records),
                       ("max_bytes", run.bytes)):
        if done >= limits[name]:
            return name, f"{name} {limits[name]} reached with more pages to fetch"
    return None


def _dedupe(run: _WindowRun, batch: pa.RecordBatch, keys: np.ndarray) -> pa.RecordBatch:
    """Detect record ids seen earlier in the window: fail, or drop them and report."""
    seen = run.ids.add_new(keys)
    if not seen.any():
        return batch
    rows = np.flatnonzero(seen)
    sample = [batch.column("record_id")[int(i)].as_py() for i in rows[:5]]
    message = (f"{len(rows)} record id(s) already seen in this window (e.g. "
               f"{', '.join(sample)}): the upstream duplicated records across pages")
    if run.resolved.spec.pagination.on_violation == "error":
        raise PaginationViolation(message, field="records.idField")
    run.duplicates += len(rows)
    run.findings.append({"code": "duplicate_record_id", "message": message})
    return batch.filter(bool_array(~seen))


def _check_contract(table: pa.Table, window: Window) -> None:
    """Fail fast if envelopes break docs/contract.md#envelope; checked per row group."""
    findings = validate_envelopes(table, window, verify_raw_sha=False)
    if findings:
        first = findings[0]
        raise InvalidArgument(f"envelope contract violated: {first['code']}: "
                              f"{first['message']} (event ids {first['event_ids']})",
                              field="envelope")
