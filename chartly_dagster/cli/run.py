"""The online half of the connector-tester: `run --apply` and `doctor --apply`.

Secrets come from the environment or a mounted folder, never from flags, and every byte
printed passes the redactor that knows them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..core.catalog import ResolvedProfile
from ..core.errors import ChartlyError, ExitCode, PreconditionFailed
from ..core.plan import Plan
from ..core.report import Invocation, document, header
from ..core.windows import Window
from ..runtime.doctor import run_doctor
from ..runtime.executor import (
    NetworkOptions,
    PageProgress,
    RunEvent,
    WindowTarget,
    fetch_window,
    window_file_name,
)
from ..runtime.recording import RecordTo, ReplayFrom, recording_enabled
from ..runtime.redact import Redactor
from ..runtime.secrets import EnvSecretProvider, FileSecretProvider, SecretResolver
from ..runtime.storage import Storage
from .output import Output
from .render import render_document


def _secrets(args: argparse.Namespace, out: Output) -> SecretResolver:
    providers: list[Any] = [EnvSecretProvider()]
    if args.secrets_dir:
        providers.insert(0, FileSecretProvider(Path(args.secrets_dir)))
    redactor = Redactor()
    out.scrub = redactor.scrub
    return SecretResolver(providers, redactor=redactor)


class _Progress:
    """One updating stderr line (pages, records, rate, elapsed) for a person watching.

    Only on a terminal: piped or captured stderr stays silent, and stdout never changes.
    """

    def __init__(self, out: Output) -> None:
        self.out = out
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, event: RunEvent) -> None:
        if not isinstance(event, PageProgress):
            self.out.info(event.message)
            return
        elapsed = time.monotonic() - self.started
        rate = event.records / elapsed if elapsed > 0 else 0.0
        self.out.stderr.write(f"\rpage {event.page}  records {event.records:,}  "
                              f"{rate:,.0f} records/s  elapsed {elapsed:,.1f}s ")
        self.out.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.out.stderr.write("\n")


def _refuse_other_plan(storage: Storage, relative: str, plan: Plan) -> None:
    """A file of the same window written by another plan is kept unless --overwrite."""
    existing = storage.plan_hash_at(relative)
    if existing is None or existing == plan.plan_hash:
        return
    written_by = f"plan {existing}" if existing else "no recorded plan"
    raise PreconditionFailed(
        f"{storage.uri_of(storage.path_of(relative))} exists and was written by {written_by}, "
        f"not this one ({plan.plan_hash}); pass --overwrite to replace it",
        field="--overwrite")


def _recording(args: argparse.Namespace, inv: Invocation, resolved: ResolvedProfile,
               storage: Storage) -> RecordTo | ReplayFrom | None:
    """`--replay DIR`, `--record DIR`, else the profile's setting (on in dev) next to the
    output."""
    if args.replay:
        return ReplayFrom(args.replay)
    if args.record:
        target = Storage.parse(args.record, field="--record")
        target.check_writable()
        return RecordTo(target)
    return RecordTo(storage) if recording_enabled(resolved.spec, inv.env) else None


def execute_run(args: argparse.Namespace, out: Output, inv: Invocation,
                resolved: ResolvedProfile, window: Window, plan: Plan) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    secrets = _secrets(args, out)
    progress = _Progress(out) if out.stderr.isatty() else None
    try:
        storage = Storage.parse(args.output, field="--output")
        storage.check_writable()
        if not args.overwrite:
            _refuse_other_plan(storage, window_file_name(resolved, window, None), plan)
        network = NetworkOptions(inv.env, secrets, recording=_recording(args, inv, resolved,
                                                                        storage))
        result = fetch_window(resolved, window, plan, target=WindowTarget(storage),
                              network=network, on_progress=progress)
    except ChartlyError as exc:
        doc = document(inv, resolved, window, plan, code=exc.code,
                       findings=[{"code": exc.code, "path": exc.field or "run",
                                  "message": exc.message}])
        out.emit(doc, render_document(doc))
        return int(exc.exit_code)
    finally:
        if progress is not None:
            progress.close()
    # A cap is the safety limit the caller asked for: reported in results (`capped_by`),
    # not a failure.
    findings = [{"code": f["code"], "path": "results", "message": f["message"]}
                for f in result.findings if f["code"] != "cap_reached"]
    replayed = result.recorded
    if replayed is not None and replayed.replayed and (
            replayed.content_hash != result.content_hash):
        findings.append({"code": "replay_content_differs", "path": "results.content_hash",
                         "message": f"the replay wrote content {result.content_hash}, the "
                                    f"recorded run {replayed.content_hash}"})
    doc = document(inv, resolved, window, plan, findings=findings,
                   results=result.results_section())
    out.emit(doc, render_document(doc))
    return int(ExitCode.OK if doc["validation"]["ok"] else ExitCode.VALIDATION_FAILED)


def execute_doctor(args: argparse.Namespace, out: Output, inv: Invocation,
                   resolved: ResolvedProfile, window: Window) -> int:
    secrets = _secrets(args, out)
    report = run_doctor(resolved, env=inv.env, secrets=secrets, window=window)
    doc = {"header": {**header(inv, resolved, window), "mode": "doctor"},
           "doctor": report.to_dict()}
    text = (f"doctor {resolved.ref}: {report.category}"
            f"{f' ({report.latency_ms} ms)' if report.latency_ms is not None else ''}"
            f" - {report.message}\n")
    out.emit(doc, text)
    return int(report.exit_code)
