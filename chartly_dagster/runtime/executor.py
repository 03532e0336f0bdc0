"""The executor: drive one window's plan page by page into one Parquet file.

This is the single place where a plan meets the network. The CLI `run` and the Dagster
assets both call `fetch_window`, so paging, envelopes and hashes exist exactly once.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..core.canonical import format_rfc3339
from ..core.catalog import ResolvedProfile
from ..core.errors import (
    ChartlyError,
    InvalidArgument,
    PaginationViolation,
    UpstreamError,
    UpstreamUnavailable,
)
from ..core.plan import Limits, Plan, build_plan
from ..core.refs import format_ref
from ..core.windows import Window
from .egress import Resolver
from .envelope_arrow import (
    ENVELOPE_ARROW_SCHEMA,
    EnvelopeBuilder,
    IdSet,
    event_id_keys,
    validate_envelopes,
)
from .http import EnvPolicy, GuardedClient, build_client
from .paginate import STOPPED_ON_FINDING, PageInfo, PageRequest, Paginator, read_records
from .parquet import PageStaging, WindowFileWriter
from .ratelimit import bucket_for
from .redact import install_log_redaction
from .retry import RetryBudget, RetryPolicy, classify_status
from .secrets import SecretResolver
from .telemetry import audit, metrics

log = logging.getLogger("chartly.runtime")
Clock = Callable[[], datetime]
#: cursors kept in a checkpoint for repeat detection after a resume
CHECKPOINT_SEEN = 16


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ResumeState:
    """Where a window stopped: pages staged, records and sequence so far, next request."""

    pages_done: int
    records_done: int
    sequence_next: int
    continuation: dict[str, Any]
    dropped: int = 0
    bytes_done: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"pages_done": self.pages_done, "records_done": self.records_done,
                "sequence_next": self.sequence_next, "continuation": self.continuation,
                "dropped": self.dropped, "bytes_done": self.bytes_done}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResumeState:
        return cls(int(data["pages_done"]), int(data["records_done"]),
                   int(data["sequence_next"]), dict(data["continuation"]),
                   int(data.get("dropped", 0)), int(data.get("bytes_done", 0)))


@dataclass(frozen=True)
class PageProgress:
    """Reported after each page is durably staged: enough to resume right after it."""

    page: int
    records: int
    bytes: int
    checkpoint: dict[str, Any]
    resume: ResumeState


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
    checkpoint: dict[str, Any]
    uri: str
    file_bytes: int
    duration_seconds: float
    arrow_schema: pa.Schema = field(repr=False)
    watermark: str | None
    resumed_from_page: int = 0

    def results_section(self) -> dict[str, Any]:
        """The `results` section of the output contract (no wall-clock timestamps)."""
        checkpoint = {k: v for k, v in self.checkpoint.items() if k != "updated_at"}
        return {"outcome": self.outcome, "ended_by": self.ended_by,
                "records": self.records, "pages": self.pages,
                "bytes": self.bytes, "requests": self.requests, "retries": self.retries,
                "dropped_out_of_window": self.dropped_out_of_window,
                "duplicates": self.duplicates, "content_hash": self.content_hash,
                "checkpoint": checkpoint, "output": self.uri, "file_bytes": self.file_bytes,
                "duration_seconds": round(self.duration_seconds, 3),
                "watermark": self.watermark, "resumed_from_page": self.resumed_from_page,
                "findings": self.findings}


def window_file_name(resolved: ResolvedProfile, window: Window, partition: str | None) -> str:
    ref = resolved.ref
    stem = partition or format_rfc3339(window.start)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return f"{ref.tenant}/{ref.project}/{ref.name}/{safe}.parquet"


def _staging_folder(destination: str, relative: str, staging_dir: str | None) -> Path:
    if staging_dir:
        root = Path(staging_dir)
    elif "://" in destination and not destination.startswith("file://"):
        root = Path(tempfile.gettempdir()) / "chartly-staging"
    else:
        root = Path(destination.removeprefix("file://")) / ".staging"
    return root / relative.removesuffix(".parquet")


class _Window:
    """Mutable state of one window run; keeps `fetch_window` readable."""

    def __init__(self, resolved: ResolvedProfile, window: Window, plan: Plan,
                 partition: str | None, clock: Clock) -> None:
        self.resolved = resolved
        self.window = window
        self.plan = plan
        self.partition = partition
        self.clock = clock
        self.builder = EnvelopeBuilder(resolved, window)
        self.ids = IdSet()
        self.pages = self.records = self.bytes = self.requests = self.dropped = 0
        self.duplicates = 0
        self.sequence = 0
        self.findings: list[dict[str, Any]] = []
        self.watermark_us: int | None = None
        self.outcome = "complete"

    def observe_watermark(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            top = pc.max(batch.column("occurred_at").cast(pa.int64())).as_py()
            self.watermark_us = top if self.watermark_us is None else max(self.watermark_us, top)

    @property
    def watermark(self) -> str | None:
        if self.watermark_us is None:
            return None
        return format_rfc3339(datetime.fromtimestamp(self.watermark_us / 1e6, UTC))

    def checkpoint(self, paginator: Paginator) -> dict[str, Any]:
        ref = self.resolved.ref
        payload = {**self._position(paginator), "pages": self.pages, "records": self.records,
                   "sequence_next": self.sequence, "watermark": self.watermark}
        return {"scope": {"tenant": ref.tenant, "project": ref.project,
                          "connector": ref.name,
                          "partition": self.partition or format_rfc3339(self.window.start)},
                "checkpoint_type": paginator.checkpoint_type, "payload": payload,
                "updated_at": format_rfc3339(self.clock().replace(microsecond=0))}

    @staticmethod
    def _position(paginator: Paginator) -> dict[str, Any]:
        """The paginator's state, with only the latest cursors kept for repeat detection."""
        state = dict(paginator.state)
        if "seen" in state:
            state["seen"] = state["seen"][-CHECKPOINT_SEEN:]
        return state

    def resume_state(self, paginator: Paginator) -> ResumeState:
        return ResumeState(self.pages, self.records, self.sequence, self._position(paginator),
                           self.dropped, self.bytes)


def _fetch_page(client: GuardedClient, request: PageRequest, clock: Clock,
                counter: list[int]) -> tuple[Any, httpx.Headers, str, int]:
    counter[0] += 1
    response = client.get(request.url, request.params or None)
    error = classify_status(response.status_code, response.headers, response.url, clock())
    if error is not None:
        raise error
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        # Truncated or garbled bodies are usually a cut connection: retry the page.
        raise UpstreamUnavailable(f"response from {response.url} is not valid JSON "
                                  f"({len(response.content)} bytes)") from None
    return body, response.headers, response.url, len(response.content)


def fetch_window(resolved: ResolvedProfile, window: Window, *, env: str, destination: str,
                 secrets: SecretResolver | None = None, limits: Limits | None = None,
                 resume: ResumeState | None = None,
                 on_page: Callable[[PageProgress], None] | None = None,
                 partition: str | None = None, env_policy: EnvPolicy | None = None,
                 staging_dir: str | None = None, resolver: Resolver | None = None,
                 verify: Any = None, clock: Clock = utc_now,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> WindowResult:
    """Fetch `window` into one Parquet file under `destination`; raise a ChartlyError on failure.

    On failure nothing is written at the final path and staged pages stay for a resume;
    `on_page` sees a checkpoint after every page so a caller can persist it.
    """
    started = time.monotonic()
    plan = build_plan(resolved, window, limits)
    ref_text = format_ref(resolved.ref)
    audit("connector.profile.resolved", ref=ref_text, resolved_hash=resolved.hash,
          source=resolved.source_path)
    audit("connector.run.started", ref=ref_text, window=window.to_dict(),
          plan_hash=plan.plan_hash, partition=partition)
    relative = window_file_name(resolved, window, partition)
    staging = PageStaging(_staging_folder(destination, relative, staging_dir))
    run = _Window(resolved, window, plan, partition, clock)
    budget = RetryBudget(resolved.spec.retry.budget_per_window)
    counter = [0]
    writer: WindowFileWriter | None = None
    try:
        with build_client(resolved, env=env, secrets=secrets, env_policy=env_policy,
                          resolver=resolver, verify=verify) as client:
            if secrets is not None:
                # Every caller (CLI, Dagster, scripts) gets scrubbed logs: httpx logs each
                # request URL at INFO, and an apiKeyQuery credential rides in that URL.
                install_log_redaction(secrets.redactor)
            writer = WindowFileWriter(destination, relative,
                                      check=lambda table: _check_contract(table, window))
            paginator = _start(resolved, plan, staging, run, resume, writer)
            retry = RetryPolicy(resolved.spec.retry, budget, sleep=sleep, rng=rng,
                                on_retry=lambda exc, wait: log.info(
                                    "retrying after %s (%s) in %.2fs", exc.code, exc.message,
                                    wait))
            _drive(client, paginator, staging, run, writer, retry, counter, on_page, sleep)
        uri, content_hash, file_bytes = writer.commit()
        checkpoint = run.checkpoint(paginator)
        staging.clear()
    except Exception as exc:
        if writer is not None:
            writer.abort()
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
    return WindowResult(
        ref=ref_text, resolved_hash=resolved.hash, plan_hash=plan.plan_hash, window=window,
        outcome=run.outcome, ended_by=paginator.ended_by or "", records=run.records,
        pages=run.pages, bytes=run.bytes,
        requests=counter[0], retries=budget.used, dropped_out_of_window=run.dropped,
        duplicates=run.duplicates, findings=sorted(run.findings, key=lambda f: f["code"]),
        content_hash=content_hash, checkpoint=checkpoint, uri=uri, file_bytes=file_bytes,
        duration_seconds=duration, arrow_schema=ENVELOPE_ARROW_SCHEMA,
        watermark=run.watermark, resumed_from_page=resume.pages_done if resume else 0)


def _start(resolved: ResolvedProfile, plan: Plan, staging: PageStaging, run: _Window,
           resume: ResumeState | None, writer: WindowFileWriter) -> Paginator:
    """A fresh paginator, or one restored after the last checkpointed page."""
    auth = resolved.spec.auth
    drop = frozenset(filter(None, [auth.credential_param()]))
    if resume is None or len(staging.pages()) < resume.pages_done:
        if resume is not None:
            log.warning("cannot resume after page %d: only %d pages are staged; starting over",
                        resume.pages_done, len(staging.pages()))
        staging.reset()
        return Paginator(resolved.spec, plan, drop)
    staging.keep_first(resume.pages_done)
    for batch in staging.batches():
        run.ids.add_new(event_id_keys(batch.column("event_id")))
        run.observe_watermark(batch)
        writer.submit(batch)
    run.pages, run.records = resume.pages_done, resume.records_done
    run.sequence, run.dropped, run.bytes = resume.sequence_next, resume.dropped, resume.bytes_done
    log.info("resuming after page %d (%d records)", resume.pages_done, resume.records_done)
    return Paginator(resolved.spec, plan, drop, state=resume.continuation)


def _drive(client: GuardedClient, paginator: Paginator, staging: PageStaging, run: _Window,
           writer: WindowFileWriter, retry: RetryPolicy, counter: list[int],
           on_page: Callable[[PageProgress], None] | None,
           sleep: Callable[[float], None]) -> None:
    spec = run.resolved.spec
    limits = run.plan.limits
    bucket = bucket_for(f"{run.resolved.ref.namespace}/{run.resolved.ref.name}",
                        spec.rate_limit.max_requests_per_minute, spec.rate_limit.burst)
    max_wait = spec.retry.max_retry_after_ms / 1000
    while (request := paginator.current) is not None:
        cap = _cap_reached(run, limits)
        if cap:
            run.outcome = "capped"
            run.findings.append({"code": "cap_reached", "message": cap[1]})
            paginator.stop(cap[0])
            return

        def attempt(request: PageRequest = request) -> tuple[Any, httpx.Headers, str, int]:
            bucket.acquire(max_wait=max_wait, sleep=sleep)
            return _fetch_page(client, request, run.clock, counter)

        try:
            body, headers, final_url, size = retry.call(attempt)
        except UpstreamUnavailable as exc:
            if "not valid JSON" in exc.message:
                raise InvalidArgument(exc.message) from exc
            raise
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
            paginator.stop("cap:maxRecords")
            run.outcome = "capped"
            run.findings.append({"code": "cap_reached",
                                 "message": f"max_records {limits['max_records']} reached"})
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
        if on_page is not None:  # only a caller that keeps checkpoints can ever resume
            staging.stage(run.pages, batch)
        writer.submit(batch)
        run.pages += 1
        if on_page is not None:
            on_page(PageProgress(run.pages, run.records, run.bytes, run.checkpoint(paginator),
                                 run.resume_state(paginator)))
        if stop_after:
            return


def _cap_reached(run: _Window, limits: dict[str, int]) -> tuple[str, str] | None:
    """(ended_by, message) of the first cap the window has reached, if any."""
    for name, done, key in (("max_pages", run.pages, "cap:maxPages"),
                            ("max_records", run.records, "cap:maxRecords"),
                            ("max_bytes", run.bytes, "cap:maxBytes")):
        if done >= limits[name]:
            return key, f"{name} {limits[name]} reached with more pages to fetch"
    return None


def _dedupe(run: _Window, batch: pa.RecordBatch, keys: np.ndarray) -> pa.RecordBatch:
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
    return batch.filter(pa.array(~seen))



def _check_contract(table: pa.Table, window: Window) -> None:
    """Fail fast (seed 001) if envelopes break the contract; checked per row group."""
    findings = validate_envelopes(table, window, verify_raw_sha=False)
    if findings:
        first = findings[0]
        raise InvalidArgument(f"envelope contract violated: {first['code']}: "
                              f"{first['message']} (event ids {first['event_ids']})",
                              field="envelope")
