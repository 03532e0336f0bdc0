"""`chartly-tool profiles schema|list|show|golden`: inspect profiles and keep golden plans."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.canonical import pretty_json
from ..core.catalog import ResolvedProfile
from ..core.errors import ExitCode
from ..core.plan import build_plan
from ..core.profile import profile_json_schema
from ..core.refs import ProfileRef, format_ref, parse_ref
from ..core.report import Invocation, document
from ..core.windows import Window
from .common import add_format, add_profiles_dir, load_catalog, project_root
from .output import Output
from .render import grouped_table

# Golden plans pin one fixed window, so they never depend on when they were written.
GOLDEN_WINDOW = ("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")


def add_parser(tools: argparse._SubParsersAction) -> None:
    group = tools.add_parser("profiles", help="inspect connector profiles and golden plans",
                             description="Inspect connector profiles and keep golden plans.")
    group.set_defaults(usage_of=group)
    commands = group.add_subparsers(dest="command", metavar="COMMAND",
                                    parser_class=type(group),
                                    help="what to do (COMMAND --help for its flags)")
    schema = commands.add_parser(
        "schema", help="print the profile JSON Schema (for editors and CI linters)")
    schema.set_defaults(handler=_schema)
    listing = commands.add_parser("list", help="every resolvable ref with hash and cadence")
    listing.set_defaults(handler=_list)
    show = commands.add_parser("show", help="the resolved profile (secrets only as refs)")
    show.add_argument("ref", metavar="REF",
                      help="profile ref TENANT/PROJECT::connector/NAME@VERSION[#VARIANT]")
    show.set_defaults(handler=_show)
    golden = commands.add_parser("golden", help="check (or --write) every golden plan file; "
                                                "exit 4 when one is stale")
    golden.add_argument("--write", action="store_true", help="rewrite the golden files")
    golden.set_defaults(handler=_golden)
    for cmd in (schema, listing, show, golden):
        add_format(cmd)
    for cmd in (listing, show, golden):
        add_profiles_dir(cmd)


def _local_ref(ref: ProfileRef) -> str:
    """The ref inside its namespace, for tables grouped under the namespace."""
    return format_ref(ref).split("::", 1)[1]


def _schema(args: argparse.Namespace, out: Output) -> int:
    out.emit(profile_json_schema())
    return 0


def _list(args: argparse.Namespace, out: Output) -> int:
    resolved = load_catalog(args.profiles_dir).resolve_all()
    rows = [{"ref": format_ref(r.ref), "hash": r.hash, "pagination": r.spec.pagination.mode,
             "cadence": r.spec.partitions.cadence, "envs": list(r.spec.envs),
             "path": r.source_path} for r in resolved]
    groups: dict[str, list[list[Any]]] = {}
    for r in resolved:
        groups.setdefault(r.ref.namespace, []).append(
            [_local_ref(r.ref), r.spec.pagination.mode, r.spec.partitions.cadence,
             ",".join(r.spec.envs)])
    text = grouped_table(["ref", "pagination", "cadence", "envs"], groups)
    out.emit({"profiles": rows}, text + "(hashes and files: --format json, or profiles show "
                                        "REF)\n")
    return 0


def _show(args: argparse.Namespace, out: Output) -> int:
    resolved = load_catalog(args.profiles_dir).resolve(parse_ref(args.ref))
    doc = {"ref": format_ref(resolved.ref), "hash": resolved.hash, "path": resolved.source_path,
           "profile": resolved.document}
    out.emit(doc, pretty_json(doc))
    return 0


def golden_document(resolved: ResolvedProfile) -> dict:
    """The plan document a golden file holds: the fixed window, the first env allowed."""
    inv = Invocation(env=resolved.spec.envs[0], tenant=resolved.ref.tenant,
                     project=resolved.ref.project, mode="plan")
    window = Window.parse(*GOLDEN_WINDOW)
    return document(inv, resolved, window, build_plan(resolved, window))


def _golden(args: argparse.Namespace, out: Output) -> int:
    catalog = load_catalog(args.profiles_dir)
    root = project_root(catalog)
    rows, stale = [], 0
    groups: dict[str, list[list[Any]]] = {}
    for resolved in catalog.resolve_all():
        if not resolved.spec.golden:
            continue
        path = root / resolved.spec.golden
        text = pretty_json(golden_document(resolved))
        current = path.read_text(encoding="utf-8") if path.exists() else None
        state = "ok" if current == text else ("missing" if current is None else "stale")
        if state != "ok" and args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
            state = "written"
        stale += state in ("missing", "stale")
        rows.append({"ref": format_ref(resolved.ref), "golden": resolved.spec.golden,
                     "state": state})
        groups.setdefault(resolved.ref.namespace, []).append(
            [_local_ref(resolved.ref), resolved.spec.golden, state])
    out.emit({"golden": rows}, grouped_table(["ref", "golden", "state"], groups))
    return int(ExitCode.VALIDATION_FAILED if stale else ExitCode.OK)



