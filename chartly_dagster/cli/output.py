"""Rendering for the CLI: canonical JSON or text on stdout, errors in the same format.

Everything printed passes through one writer so redaction can never be skipped by a
code path that prints on its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ..core.canonical import pretty_json
from ..core.errors import ChartlyError


class Output:
    """Writes documents and errors in the chosen format; `scrub` removes secrets first."""

    def __init__(self, fmt: str = "json", stdout: TextIO | None = None,
                 stderr: TextIO | None = None,
                 scrub: Callable[[str], str] | None = None) -> None:
        self.format = fmt if fmt in ("json", "text") else "json"
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.scrub: Callable[[str], str] = scrub or (lambda text: text)

    @classmethod
    def for_argv(cls, argv: Sequence[str]) -> Output:
        """Pick the format before parsing, so even a usage error comes out as asked."""
        fmt = "json"
        for i, arg in enumerate(argv):
            if arg == "--format" and i + 1 < len(argv):
                fmt = argv[i + 1]
            elif arg.startswith("--format="):
                fmt = arg.split("=", 1)[1]
        return cls(fmt)

    def emit(self, doc: Any, text: str | None = None) -> None:
        """Print `doc` as JSON, or `text` (falling back to JSON) in text mode."""
        body = pretty_json(doc) if self.format == "json" or text is None else text
        self.stdout.write(self.scrub(body if body.endswith("\n") else body + "\n"))
        self.stdout.flush()

    def info(self, message: str) -> None:
        self.stderr.write(self.scrub(message.rstrip("\n") + "\n"))

    def error(self, exc: ChartlyError) -> None:
        if self.format == "json":
            doc: dict[str, Any] = {"error": exc.to_dict(), "exit_code": int(exc.exit_code)}
            errors = getattr(exc, "errors", None)
            if errors:
                doc["error"]["errors"] = errors
            self.stdout.write(self.scrub(pretty_json(doc)))
            self.stdout.flush()
        else:
            self.stderr.write(self.scrub(f"error [{exc.code}]: {exc.message}\n"))
