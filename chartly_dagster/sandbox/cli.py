"""`chartly-tool sandbox serve`: run the sandbox upstream in the foreground.

The demo and benchmarks point profiles at it. Credentials it should demand come from a
JSON file (like a mounted secret), never from arguments, so they stay out of `ps` output
and shell history.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from .config import SandboxAuth, SandboxConfig
from .server import start_sandbox


def build_parser(prog: str = "chartly-tool sandbox serve") -> argparse.ArgumentParser:
    """The `serve` arguments, exposed so the main CLI can mount them as a subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Serve the deterministic sandbox API (events, feed, orders, invoices, metrics, "
        "tickets) until interrupted."))
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default 127.0.0.1; loopback only unless "
                             "--allow-non-loopback)")
    parser.add_argument("--port", type=int, default=8765,
                        help="TCP port (default 8765; 0 picks a free port)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--events-per-hour", type=int, default=60,
                        help="records per hour on every endpoint (default 60)")
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


def serve_main(argv: list[str] | None = None) -> int:
    """Run the sandbox until Ctrl-C; returns a process exit code (0 ok, 2 usage)."""
    args = build_parser().parse_args(argv)
    try:
        auth, endpoint_auth = (load_auth_file(args.auth_file) if args.auth_file
                               else (None, {}))
        config = SandboxConfig(seed=args.seed, events_per_hour=args.events_per_hour,
                               auth=auth, endpoint_auth=endpoint_auth)
        sandbox = start_sandbox(config, host=args.host, port=args.port,
                                allow_non_loopback=args.allow_non_loopback)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sandbox listening on {sandbox.base_url} (seed {args.seed}, "
          f"{args.events_per_hour} events/hour)", flush=True)
    try:
        sandbox.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.close()
    return 0
