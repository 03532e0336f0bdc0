"""`chartly-tool profiles new NAME --pagination MODE`: write a commented starter profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import PreconditionFailed
from ..core.starter import (
    DEFAULT_NAMESPACE,
    DEFAULT_SANDBOX_PORT,
    PAGINATION_MODES,
    starter_profile,
)
from .common import add_format, add_profiles_dir, profiles_dir
from .output import Output


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Mount `new` under `chartly-tool profiles`."""
    new = commands.add_parser(
        "new", help="write a starter profile that runs against the sandbox as is",
        description="Write a valid, commented starter profile for one pagination mode: its "
                    "#dev variant points at the local sandbox, the comments say what to "
                    "change for your API.")
    new.add_argument("name", metavar="NAME", help="connector name (lowercase, e.g. orders)")
    new.add_argument("--pagination", required=True, choices=PAGINATION_MODES, metavar="MODE",
                     help=f"how the API pages: {', '.join(PAGINATION_MODES)}")
    new.add_argument("--namespace", default=DEFAULT_NAMESPACE, metavar="TENANT/PROJECT",
                     help=f"profile namespace (default {DEFAULT_NAMESPACE})")
    new.add_argument("--sandbox-port", type=int, default=DEFAULT_SANDBOX_PORT, metavar="PORT",
                     help=f"port of the sandbox the #dev variant calls (default "
                          f"{DEFAULT_SANDBOX_PORT})")
    new.add_argument("--output", metavar="FILE",
                     help="where to write (default: <profiles folder>/NAME.yaml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_profiles_dir(new)
    add_format(new)
    new.set_defaults(handler=_new)


def _new(args: argparse.Namespace, out: Output) -> int:
    text = starter_profile(args.name, args.pagination, namespace=args.namespace,
                           sandbox_port=args.sandbox_port)
    target = Path(args.output) if args.output else (
        profiles_dir(args.profiles_dir) / f"{args.name}.yaml")
    if target.exists() and not args.force:
        raise PreconditionFailed(f"{target} already exists; pass --force to overwrite it",
                                 field="--output")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PreconditionFailed(f"cannot write {target}: {exc.strerror or exc}",
                                 field="--output") from None
    tenant, project = args.namespace.split("/")
    ref = f"{args.namespace}::connector/{args.name}@0.1.0#dev"
    doc = {"written": str(target), "ref": ref, "pagination": args.pagination,
           "next": [f"chartly-tool sandbox serve --port {args.sandbox_port}",
                    f"chartly-tool connector-tester plan --env dev --tenant {tenant} "
                    f'--project {project} --connector-profile "{ref}" '
                    "--window-start 2026-02-01T00:00:00Z --window-end 2026-02-02T00:00:00Z"]}
    out.emit(doc, f"wrote {target} ({args.pagination} pagination, ref {ref})\n"
                  "next: " + "\n      ".join(doc["next"]))
    return 0
