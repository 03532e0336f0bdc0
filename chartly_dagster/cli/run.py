"""The online half of the connector-tester: `run --apply` and `doctor --apply`.

Secrets come from the environment or a mounted folder, never from flags, and every byte
printed passes the redactor that knows them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.catalog import ResolvedProfile
from ..core.errors import ChartlyError, ExitCode
from ..core.plan import Limits, Plan
from ..core.report import Invocation, document, header
from ..core.windows import Window
from ..runtime.doctor import probe_window, run_doctor
from ..runtime.executor import PageProgress, fetch_window
from ..runtime.redact import Redactor, install_log_redaction
from ..runtime.secrets import EnvSecretProvider, FileSecretProvider, SecretResolver
from .output import Output
from .render import render_document


def _secrets(args: argparse.Namespace, out: Output) -> SecretResolver:
    providers: list[Any] = [EnvSecretProvider()]
    if args.secrets_dir:
        providers.insert(0, FileSecretProvider(Path(args.secrets_dir)))
    redactor = Redactor()
    install_log_redaction(redactor)
    out.scrub = redactor.scrub
    return SecretResolver(providers, redactor=redactor)


def _progress(out: Output, max_pages: int) -> Callable[[PageProgress], None] | None:
    """A one-line progress bar on a terminal in text mode; silent otherwise."""
    if out.format != "text" or not out.stderr.isatty():
        return None

    def show(progress: PageProgress) -> None:
        filled = min(30, 30 * progress.page // max(1, max_pages))
        out.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] page {progress.page} "
                         f"records {progress.records} bytes {progress.bytes}")
        out.stderr.flush()

    return show


def execute_run(args: argparse.Namespace, out: Output, inv: Invocation,
                resolved: ResolvedProfile, window: Window, plan: Plan) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    secrets = _secrets(args, out)
    progress = _progress(out, plan.limits["max_pages"])
    limits = Limits(args.max_pages, args.max_records, args.max_bytes)
    try:
        result = fetch_window(resolved, window, env=inv.env, destination=args.output,
                              secrets=secrets, limits=limits, on_page=progress)
    except ChartlyError as exc:
        doc = document(inv, resolved, window, plan, code=exc.code,
                       findings=[{"code": exc.code, "path": exc.field or "run",
                                  "message": exc.message}])
        out.emit(doc, render_document(doc))
        return int(exc.exit_code)
    finally:
        if progress is not None:
            out.stderr.write("\n")
    # A cap is the safety limit the caller asked for: reported in results, not a failure.
    findings = [{"code": f["code"], "path": "results", "message": f["message"]}
                for f in result.findings if f["code"] != "cap_reached"]
    doc = document(inv, resolved, window, plan, findings=findings,
                   results=result.results_section())
    out.emit(doc, render_document(doc))
    return int(ExitCode.OK if doc["validation"]["ok"] else ExitCode.VALIDATION_FAILED)


def execute_doctor(args: argparse.Namespace, out: Output, inv: Invocation,
                   resolved: ResolvedProfile) -> int:
    secrets = _secrets(args, out)
    report = run_doctor(resolved, env=inv.env, secrets=secrets)
    doc = {"header": {**header(inv, resolved, probe_window(resolved)), "mode": "doctor"},
           "doctor": report.to_dict()}
    text = (f"doctor {resolved.ref}: {report.category}"
            f"{f' ({report.latency_ms} ms)' if report.latency_ms is not None else ''}"
            f" - {report.message}\n")
    out.emit(doc, text)
    return int(report.exit_code)
