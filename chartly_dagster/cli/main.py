"""`chartly-tool`: argument parsing and dispatch; each failure exits with its contract code.

Nothing unexpected leaves as a traceback: it becomes the error document (exit 1) with a
short message, and the traceback goes to stderr only when asked for (`--debug` or
CHARTLY_DEBUG=1), through the same redacting writer as everything else.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from .. import __version__
from ..core.errors import ChartlyError, ExitCode, UsageError
from . import connector_tester, profiles
from .output import Output

DEBUG_ENV = "CHARTLY_DEBUG"
DESCRIPTION = """Plan, validate, run and inspect governed HTTP connector profiles.
Offline commands never touch the network; online ones need --apply."""
EPILOG = """examples:
  chartly-tool profiles list --format text
  chartly-tool connector-tester plan --env dev \\
    --tenant tenant-demo --project proj-sales \\
    --connector-profile "tenant-demo/proj-sales::connector/orders@2.1.0#dev" \\
    --window-start 2026-02-01T00:00:00Z --window-end 2026-02-02T00:00:00Z
  chartly-tool COMMAND --help        every command's own flags

exit codes: 0 ok, 1 error, 2 usage, 3 precondition failed, 4 validation failed,
            5 unsafe operation blocked"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one exit path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


class UnexpectedError(ChartlyError):
    """A failure no other class describes: a bug, or an environment we did not foresee."""

    code = "internal_error"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chartly-tool", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chartly-tool {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an unexpected error on stderr "
                             f"(or set {DEBUG_ENV}=1)")
    parser.set_defaults(usage_of=parser)
    tools = parser.add_subparsers(dest="tool", metavar="COMMAND", parser_class=_Parser,
                                  help="a command group (COMMAND --help for more)")
    connector_tester.add_parser(tools)
    profiles.add_parser(tools)
    sandbox = tools.add_parser("sandbox", help="local upstream API for demos, tests, benchmarks")
    sandbox_cmds = sandbox.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sandbox_cmds.add_parser("serve", help="serve the sandbox API on 127.0.0.1",
                                    add_help=False)
    serve.set_defaults(handler=_sandbox_serve)
    return parser


def _sandbox_serve(args: argparse.Namespace, out: Output) -> int:
    from ..sandbox.cli import serve_main

    return serve_main(args.rest)


def _debug(argv: Sequence[str]) -> bool:
    """Known before parsing, so a failure while parsing can still be debugged."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv


def _unexpected(exc: Exception, out: Output, debug: bool) -> int:
    if debug:
        out.info("".join(traceback.format_exception(exc)))
    hint = "" if debug else f"; rerun with --debug (or {DEBUG_ENV}=1) for details"
    # The class name only: an exception's text may quote input, even a secret.
    out.error(UnexpectedError(f"unexpected {exc.__class__.__name__}{hint}"))
    return int(ExitCode.ERROR)


def _silence_stdout() -> None:
    """The reader went away (`| head`): point stdout at /dev/null so the final flush at exit
    does not fail a second time (the recipe in Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (an in-process caller): nothing to flush later


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Output.for_argv(argv)
    debug = _debug(argv)
    parser = build_parser()
    try:
        if argv[:2] == ["sandbox", "serve"]:
            args = argparse.Namespace(handler=_sandbox_serve, rest=argv[2:])
        else:
            args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace, Output], int] | None = getattr(
            args, "handler", None)
        if handler is None:  # `chartly-tool` or a command group without its command
            args.usage_of.print_help(out.stderr)
            return int(ExitCode.USAGE)
        return handler(args, out)
    except ChartlyError as exc:
        out.error(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.ERROR)
    except BrokenPipeError:
        _silence_stdout()
        return int(ExitCode.ERROR)
    except Exception as exc:  # the one place nothing may escape as a traceback
        return _unexpected(exc, out, debug)
