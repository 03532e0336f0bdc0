"""`chartly-tool connector-tester plan|run|validate|doctor` (docs/contract.md#output).

`plan` and `validate` never touch the network; `run` does only with `--apply`; each outcome
maps to the exit-code table (docs/contract.md#exit-codes).
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
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text[:24]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


REF_HELP = "profile ref TENANT/PROJECT::connector/NAME@VERSION[#VARIANT]"


def _scope(cmd: argparse.ArgumentParser) -> None:
    """Who runs which profile where: checked against the profile before anything else."""
    cmd.add_argument("--env", choices=ENVS, required=True,
                     help="environment; the profile (or its variant) must list it in spec.envs")
    cmd.add_argument("--tenant", required=True, help="tenant the profile must belong to")
    cmd.add_argument("--project", required=True, help="project the profile must belong to")
    # Not `required=`: a missing ref is precondition_failed (exit 3), not a usage error.
    cmd.add_argument("--connector-profile", metavar="REF", help=REF_HELP + " (required)")


def _window(cmd: argparse.ArgumentParser, *, required: bool) -> None:
    when = "" if required else "; with --window-end instead of the profile's first hour"
    cmd.add_argument("--window-start", required=required, metavar="RFC3339",
                     help=f"window start, inclusive, e.g. 2026-02-01T00:00:00Z{when}")
    cmd.add_argument("--window-end", required=required, metavar="RFC3339",
                     help="window end, exclusive, e.g. 2026-02-02T00:00:00Z")


def _limits(cmd: argparse.ArgumentParser) -> None:
    for flag, what in (("--max-pages", "pages"), ("--max-records", "records"),
                       ("--max-bytes", "response bytes")):
        cmd.add_argument(flag, type=_positive, metavar="N",
                         help=f"stop after N {what} (can only lower the profile's cap)")


def _network(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--apply", action="store_true",
                     help="allow network I/O (without it the command is blocked, exit 5)")
    cmd.add_argument("--secrets-dir", metavar="PATH", help=(
        "mounted secrets folder, <dir>/<name>/<key> (CHARTLY_SECRET_<NAME>_<KEY> variables "
        "work too)"))


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--dry-run", action="store_true",
                     help="never perform network I/O; only marks the output as a dry run")
    add_format(cmd)
    add_profiles_dir(cmd)


def add_parser(tools: argparse._SubParsersAction) -> None:
    """`connector-tester` and its four commands, each offering only the flags it reads."""
    about = "plan, validate, run and probe one connector profile for one time window"
    tester = tools.add_parser("connector-tester", help=about, description=about)
    tester.set_defaults(usage_of=tester)
    commands = tester.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=type(tester),
                                     help="what to do (COMMAND --help for its flags)")

    def command(name: str, about: str, handler: Any) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = commands.add_parser(name, help=about, description=about)
        cmd.set_defaults(handler=handler, apply=False)
        _scope(cmd)
        return cmd

    plan = command("plan", "offline: resolve the profile and print the deterministic "
                           "request plan and its hash", _plan)
    _window(plan, required=True)
    _limits(plan)
    _common(plan)

    validate = command("validate", "offline: compare the plan with a golden plan file "
                                   "(exit 4 on a difference)", _validate)
    _window(validate, required=True)
    _limits(validate)
    validate.add_argument("--golden", metavar="PATH",
                          help="golden plan file (default: the profile's spec.golden)")
    _common(validate)

    run = command("run", "online (needs --apply): fetch the window with caps and write "
                         "one Parquet file", _run)
    _window(run, required=True)
    _limits(run)
    run.add_argument("--output", metavar="DIR", default="data",
                     help="folder the Parquet file is written to (default: ./data)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a window file that another plan wrote (refused "
                          "otherwise, exit 3)")
    recording = run.add_mutually_exclusive_group()
    recording.add_argument("--record", metavar="DIR",
                           help="keep every response of the window under DIR (default: next "
                                "to the output when the profile records, as in dev)")
    recording.add_argument("--replay", metavar="DIR",
                           help="offline: re-run the window from its recording under DIR; "
                                "needs no --apply, nothing leaves the machine")
    _network(run)
    _common(run)

    doctor = command("doctor", "online (needs --apply): one guarded probe request, a health "
                               "category and latency", _doctor)
    _window(doctor, required=False)
    _network(doctor)
    _common(doctor)


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
    check_run_scope(resolved, env=args.env, tenant=args.tenant, project=args.project,
                    catalog=catalog)
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
    if (args.window_start is None) != (args.window_end is None):
        raise UsageError("doctor takes both --window-start and --window-end, or neither",
                         field="--window-end" if args.window_start else "--window-start")
    window = (Window.parse(args.window_start, args.window_end) if args.window_start
              else None)
    blocked = blocked_unless_applied(args, "doctor", None, out)
    if blocked is not None:
        return blocked
    from ..runtime.doctor import probe_window
    from .run import execute_doctor

    inv, resolved = resolve_invocation(args, "run")
    return execute_doctor(args, out, inv, resolved, window or probe_window(resolved))
