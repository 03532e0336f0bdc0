"""`chartly-tool sandbox serve`: run the sandbox upstream in the foreground.

The demo and benchmarks point profiles at it. Credentials it should demand come from a
JSON file (like a mounted secret), never from arguments, so they stay out of `ps` output
and shell history. `--list` prints what it serves; `--fault` arms failures so a user can
watch a retry, a failed window and the resume path without writing a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .config import SandboxAuth, SandboxConfig
from .data import MAX_EVENTS_PER_HOUR
from .faults import FAULT_SPEC_SYNTAX, Fault, parse_fault_spec
from .server import sandbox_index, start_sandbox


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], or a usage error saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value
    return parse


def _fault(text: str) -> Fault:
    try:
        return parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str = "chartly-tool sandbox serve") -> argparse.ArgumentParser:
    """The `serve` arguments, exposed so the main CLI can mount them as a subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Serve the deterministic sandbox API until interrupted. `--list` (or GET / on a "
        "running sandbox) shows its endpoints, their pagination and the fault kinds."))
    parser.add_argument("--list", action="store_true",
                        help="print the endpoints and fault kinds, then exit")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default 127.0.0.1; loopback only unless "
                             "--allow-non-loopback)")
    parser.add_argument("--port", type=_int_in(0, 65535), default=8765,
                        help="TCP port 0..65535 (default 8765; 0 picks a free port)")
    parser.add_argument("--seed", type=_int_in(0, 2**63 - 1), default=0,
                        help="data seed, a whole number >= 0 (default 0)")
    parser.add_argument("--events-per-hour", type=_int_in(1, MAX_EVENTS_PER_HOUR), default=60,
                        help=f"records per hour on every endpoint, 1..{MAX_EVENTS_PER_HOUR} "
                             "(default 60)")
    parser.add_argument("--fault", type=_fault, action="append", default=[],
                        metavar=FAULT_SPEC_SYNTAX, help=(
                            "inject a fault (repeatable): VALUE is the status of status/"
                            "redirect or the delay in ms of slow; ENDPOINT a path or *; it "
                            "fires on request ON_REQUEST (default 1) and the TIMES-1 after "
                            "it (default 1), e.g. status=500:/v1/events:2:4 (outlasts 4 "
                            "attempts: the window fails, a re-run resumes)"))
    parser.add_argument("--auth-file", type=Path, metavar="FILE", help=(
        'JSON credentials to demand: {"*": ["bearer", "<token>"], "/v2/orders": '
        '["api_key_header", "X-Api-Key", "<key>"], "/v1/metrics": null, ...}; '
        '"*" applies to paths not listed'))
    parser.add_argument("--allow-non-loopback", action="store_true",
                        help="allow binding a non-loopback address")
    return parser


def load_auth_file(path: Path) -> tuple[SandboxAuth | None, dict[str, SandboxAuth | None]]:
    """(default auth, per-path auth) from an --auth-file; ValueError names what is wrong."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read --auth-file {path}: {exc.__class__.__name__}") from None
    if not isinstance(raw, dict) or not all(v is None or isinstance(v, list)
                                            for v in raw.values()):
        raise ValueError("--auth-file must hold an object of path -> [mode, ...] or null")
    specs = {key: cast(SandboxAuth, tuple(value)) if value is not None else None
             for key, value in raw.items()}
    default = specs.pop("*", None)
    return default, specs


#: `--list` wraps descriptions to fit a terminal
LIST_WIDTH = 100


def listing_text() -> str:
    """`--list`: the endpoints with their pagination and records, then the fault kinds."""
    index = sandbox_index()
    width = max(len(row["path"]) for row in index["endpoints"])
    lines = ["endpoints (GET, window in the query; GET / answers this as JSON):"]
    indent = " " * (width + 4)
    for row in index["endpoints"]:
        lines += textwrap.wrap(row["pagination"], LIST_WIDTH,
                               initial_indent=f"  {row['path']:<{width}}  ",
                               subsequent_indent=indent)
        if "id_field" in row:
            lines.append(f"  {'':<{width}}  records: idField {row['id_field']}, "
                         f"timeField {row['time_field']} ({row['time_format']})")
    lines.append(f"faults (--fault {FAULT_SPEC_SYNTAX}):")
    kind_width = max(len(fault["kind"]) for fault in index["faults"])
    for fault in index["faults"]:
        lines += textwrap.wrap(fault["effect"], LIST_WIDTH,
                               initial_indent=f"  {fault['kind']:<{kind_width}}  ",
                               subsequent_indent=" " * (kind_width + 4))
    return "\n".join(lines)


def serve_main(argv: list[str] | None = None) -> int:
    """Run the sandbox until Ctrl-C; returns a process exit code (0 ok, 2 usage).

    argparse itself answers a malformed option with its usage and exit code 2.
    """
    args = build_parser().parse_args(argv)
    if args.list:
        print(listing_text())
        return 0
    try:
        auth, endpoint_auth = (load_auth_file(args.auth_file) if args.auth_file
                               else (None, {}))
        config = SandboxConfig(seed=args.seed, events_per_hour=args.events_per_hour,
                               auth=auth, endpoint_auth=endpoint_auth)
        for fault in args.fault:
            config.faults.add(fault)
        sandbox = start_sandbox(config, host=args.host, port=args.port,
                                allow_non_loopback=args.allow_non_loopback)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    faults = "".join(f"; {f.kind} fault on {f.endpoint or 'every path'} from request "
                     f"{f.on_request}" for f in args.fault)
    print(f"sandbox listening on {sandbox.base_url} (seed {args.seed}, "
          f"{args.events_per_hour} events/hour{faults})", flush=True)
    try:
        sandbox.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.close()
    return 0
