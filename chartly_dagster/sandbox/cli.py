"""`chartly-tool sandbox serve`: run the sandbox upstream in the foreground.

The demo and benchmarks point profiles at it; the credential (if any) is read from an
environment variable so it never shows up in `ps` output or shell history.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import SandboxConfig
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
    parser.add_argument("--bearer-token-env", metavar="VAR",
                        help="require 'Authorization: Bearer <token>', token read from $VAR")
    parser.add_argument("--allow-non-loopback", action="store_true",
                        help="allow binding a non-loopback address")
    return parser


def serve_main(argv: list[str] | None = None) -> int:
    """Run the sandbox until Ctrl-C; returns a process exit code (0 ok, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    auth = None
    if args.bearer_token_env:
        token = os.environ.get(args.bearer_token_env)
        if not token:
            print(f"error: ${args.bearer_token_env} is not set or empty", file=sys.stderr)
            return 2
        auth = ("bearer", token)
    try:
        config = SandboxConfig(seed=args.seed, events_per_hour=args.events_per_hour, auth=auth)
        sandbox = start_sandbox(config, host=args.host, port=args.port,
                                allow_non_loopback=args.allow_non_loopback)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sandbox listening on {sandbox.base_url} (seed {args.seed}, "
          f"{args.events_per_hour} events/hour, auth {auth[0] if auth else 'none'})",
          flush=True)
    try:
        sandbox.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.close()
    return 0
