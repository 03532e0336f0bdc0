"""`chartly-tool connector-tester plan|run|validate|doctor` (seed 000).

`plan` and `validate` never touch the network; `run` does only with `--apply`; each outcome
maps to the seed's exit-code table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core.catalog import ResolvedProfile, check_run_scope
from ..core.errors import (
    ExitCode,
    PreconditionFailed,
    UnsafeOperationBlocked,
    UsageError,
)
from ..core.plan import Limits, Plan, build_plan
from ..core.refs import parse_ref
from ..core.report import Invocation, compare_to_golden, document
from ..core.windows import Window
from .common import add_format, add_profiles_dir, load_catalog, project_root
from .output import Output
from .render import render_document

ENVS = ("dev", "staging", "prod")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(tools: argparse._SubParsersAction) -> None:
    tester = tools.add_parser("connector-tester", help="plan, run and validate connector profiles")
    commands = tester.add_subparsers(dest="command", required=True,
                                     parser_class=type(tester))
    for name, helptext, handler in (
        ("plan", "offline: resolve the profile and print the deterministic request plan", _plan),
        ("run", "online (needs --apply): fetch the window with caps and write Parquet", _run),
        ("validate", "offline: compare the plan against a golden plan file", _validate),
        ("doctor", "online (needs --apply): one guarded probe with a health category", _doctor),
    ):
        cmd = commands.add_parser(name, help=helptext, description=helptext)
        cmd.set_defaults(handler=handler)
        cmd.add_argument("--env", choices=ENVS, required=True)
        cmd.add_argument("--tenant", required=True)
        cmd.add_argument("--project", required=True)
        # Not `required=`: a missing ref is precondition_failed (exit 3), not a usage error.
        cmd.add_argument("--connector-profile", metavar="REF",
                         help="namespace::connector/name@version[#variant]")
        if name != "doctor":
            cmd.add_argument("--window-start", required=True, metavar="RFC3339")
            cmd.add_argument("--window-end", required=True, metavar="RFC3339")
        add_format(cmd)
        add_profiles_dir(cmd)
        cmd.add_argument("--dry-run", action="store_true",
                         help="never enables network; changes messaging only")
        cmd.add_argument("--apply", action="store_true", help="allow network I/O (run/doctor)")
        cmd.add_argument("--max-pages", type=_positive)
        cmd.add_argument("--max-records", type=_positive)
        cmd.add_argument("--max-bytes", type=_positive)
        cmd.add_argument("--golden", metavar="PATH", help="golden plan file (validate)")
        if name in ("run", "doctor"):
            cmd.add_argument("--output", metavar="DIR", default="data",
                             help="where run writes Parquet (default: ./data)")
            cmd.add_argument("--secrets-dir", metavar="PATH",
                             help="mounted secrets folder (<dir>/<name>/<key>)")
        if name == "run":
            cmd.add_argument("--overwrite", action="store_true",
                             help="replace a window file that another plan wrote (refused "
                                  "otherwise, exit 3)")
            recording = cmd.add_mutually_exclusive_group()
            recording.add_argument("--record", metavar="DIR",
                                   help="keep every response of the window under DIR (default: "
                                        "next to the output when the profile records, as in "
                                        "dev)")
            recording.add_argument("--replay", metavar="DIR",
                                   help="offline: re-run the window from its recording under "
                                        "DIR; needs no --apply, nothing leaves the machine")


def resolve_invocation(args: argparse.Namespace, mode: str) -> tuple[Invocation,
                                                                      ResolvedProfile]:
    """Parse the ref, load and resolve the profile, check tenant/project/env scope."""
    if not args.connector_profile:
        raise PreconditionFailed("missing connector profile ref: pass --connector-profile "
                                 "namespace::connector/name@version[#variant]",
                                 field="--connector-profile")
    ref = parse_ref(args.connector_profile)
    catalog = load_catalog(args.profiles_dir)
    resolved = catalog.resolve(ref)
    check_run_scope(resolved, env=args.env, tenant=args.tenant, project=args.project)
    inv = Invocation(env=args.env, tenant=args.tenant, project=args.project, mode=mode,  # type: ignore[arg-type]
                     dry_run=args.dry_run, apply=args.apply)
    return inv, resolved


def plan_invocation(args: argparse.Namespace, mode: str) -> tuple[Invocation, ResolvedProfile,
                                                                   Window, Plan]:
    window = Window.parse(args.window_start, args.window_end)
    limits = Limits(args.max_pages, args.max_records, args.max_bytes)
    inv, resolved = resolve_invocation(args, mode)
    return inv, resolved, window, build_plan(resolved, window, limits)


def _finish(out: Output, doc: dict[str, Any], exit_code: ExitCode | None = None) -> int:
    out.emit(doc, render_document(doc))
    if exit_code is not None:
        return int(exit_code)
    return int(ExitCode.OK if doc["validation"]["ok"] else ExitCode.VALIDATION_FAILED)


def _plan(args: argparse.Namespace, out: Output) -> int:
    if args.apply:
        raise UsageError("plan is always offline: --apply does not apply to it", field="--apply")
    inv, resolved, window, plan = plan_invocation(args, "plan")
    return _finish(out, document(inv, resolved, window, plan))


def read_golden(path: Path) -> dict[str, Any]:
    try:
        golden = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PreconditionFailed(f"golden plan {str(path)!r} does not exist",
                                 field="--golden") from None
    except (OSError, ValueError) as exc:
        raise PreconditionFailed(f"golden plan {str(path)!r} is not readable JSON: "
                                 f"{exc.__class__.__name__}", field="--golden") from None
    if not isinstance(golden, dict) or "plan" not in golden:
        raise PreconditionFailed(f"golden plan {str(path)!r} has no 'plan' section",
                                 field="--golden")
    return golden


def _validate(args: argparse.Namespace, out: Output) -> int:
    if args.apply:
        raise UsageError("validate is always offline: --apply does not apply to it",
                         field="--apply")
    inv, resolved, window, plan = plan_invocation(args, "validate")
    if args.golden:
        golden_path = Path(args.golden)
    elif resolved.spec.golden:
        golden_path = project_root(load_catalog(args.profiles_dir)) / resolved.spec.golden
    else:
        raise UsageError("validate needs --golden PATH (the profile names no golden plan)",
                         field="--golden")
    findings = compare_to_golden(document(inv, resolved, window, plan), read_golden(golden_path))
    return _finish(out, document(inv, resolved, window, plan, findings=findings))


def blocked_unless_applied(args: argparse.Namespace, mode: str, doc: dict[str, Any] | None,
                           out: Output) -> int | None:
    """The safety gate: network I/O only with --apply and without --dry-run (exit 5)."""
    if args.apply and not args.dry_run:
        return None
    reason = ("--dry-run never performs network I/O" if args.dry_run
              else f"{mode} performs network I/O and requires --apply")
    if doc is None:
        raise UnsafeOperationBlocked(reason, field="--apply")
    doc["validation"] = {"ok": False, "code": "unsafe_operation_blocked",
                         "findings": [{"code": "unsafe_operation_blocked", "path": "--apply",
                                       "message": reason}]}
    return _finish(out, doc, ExitCode.UNSAFE_BLOCKED)


def _run(args: argparse.Namespace, out: Output) -> int:
    inv, resolved, window, plan = plan_invocation(args, "run")
    # A replay reads a recording and opens no connection, so it needs no --apply.
    if not args.replay:
        blocked = blocked_unless_applied(args, "run", document(inv, resolved, window, plan),
                                         out)
        if blocked is not None:
            return blocked
    from .run import execute_run

    return execute_run(args, out, inv, resolved, window, plan)


def _doctor(args: argparse.Namespace, out: Output) -> int:
    blocked = blocked_unless_applied(args, "doctor", None, out)
    if blocked is not None:
        return blocked
    from .run import execute_doctor

    inv, resolved = resolve_invocation(args, "run")
    return execute_doctor(args, out, inv, resolved)
