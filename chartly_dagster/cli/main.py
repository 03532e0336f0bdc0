"""`chartly-tool`: argument parsing and dispatch; each failure exits with its contract code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..core.errors import ChartlyError, ExitCode, UsageError
from . import connector_tester, profiles
from .output import Output


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one exit path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chartly-tool", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chartly-tool {__version__}")
    tools = parser.add_subparsers(dest="tool", required=True, parser_class=_Parser)
    connector_tester.add_parser(tools)
    profiles.add_parser(tools)
    sandbox = tools.add_parser("sandbox", help="local upstream API for demos, tests, benchmarks")
    sandbox_cmds = sandbox.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sandbox_cmds.add_parser(
        "serve", help="serve the sandbox API on 127.0.0.1 (--list: endpoints and faults; "
                      "--fault: inject one)", add_help=False)
    serve.set_defaults(handler=_sandbox_serve)
    return parser


def _sandbox_serve(args: argparse.Namespace, out: Output) -> int:
    from ..sandbox.cli import serve_main

    return serve_main(args.rest)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Output.for_argv(argv)
    parser = build_parser()
    try:
        if argv[:2] == ["sandbox", "serve"]:
            args = argparse.Namespace(handler=_sandbox_serve, rest=argv[2:])
        else:
            args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace, Output], int] = args.handler
        return handler(args, out)
    except ChartlyError as exc:
        out.error(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.ERROR)
