"""Recorded fixtures: one day of each shipped profile's dev variant, replayable offline.

Recorded from the sandbox on the dev variants' own port (8765), so the recordings' plans
are the shipped profiles' plans and a replay needs neither a sandbox nor a secret. Tests
that only need pages of a shipped profile replay these (`replay_fixture`); the sandbox
stays for network behaviour (faults, retries, egress).

Regenerate after a shipped profile's plan or the sandbox's data changes (port 8765 must
be free):

    .venv/bin/python -m tests.support.recorded
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from chartly_dagster.core.catalog import ProfileCatalog, ResolvedProfile
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.executor import (
    NetworkOptions,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from chartly_dagster.runtime.recording import RecordTo, ReplayFrom
from chartly_dagster.runtime.storage import Storage
from chartly_dagster.sandbox import run_sandbox
from tests.support.live import PROFILES, ref_text
from tests.support.paths import REPO
from tests.support.sandbox import DEMO_PORT, sandbox_config
from tests.support.secrets import sandbox_secrets

RECORDINGS = REPO / "tests" / "fixtures" / "recordings"
WINDOW = Window.parse("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")


def shipped(name: str) -> ResolvedProfile:
    """The shipped profile's dev variant, exactly as `profiles/` holds it."""
    catalog = ProfileCatalog.load(REPO / "profiles")
    return catalog.resolve(parse_ref(ref_text(name)))


def replay_fixture(name: str, out: Path) -> WindowResult:
    """Replay `name`'s recorded day into `out`: no network, no secret."""
    resolved = shipped(name)
    return fetch_window(resolved, WINDOW, build_plan(resolved, WINDOW),
                        target=WindowTarget.at(str(out)),
                        network=NetworkOptions("dev", recording=ReplayFrom(str(RECORDINGS))))


def main() -> None:
    with run_sandbox(sandbox_config(), port=DEMO_PORT), tempfile.TemporaryDirectory() as out:
        for name in sorted(PROFILES):
            resolved = shipped(name)
            result = fetch_window(
                resolved, WINDOW, build_plan(resolved, WINDOW), target=WindowTarget.at(out),
                network=NetworkOptions("dev", sandbox_secrets(),
                                       recording=RecordTo(Storage.parse(str(RECORDINGS)))))
            assert result.recorded is not None
            print(f"{name}: {result.records} records, {result.pages} pages, "
                  f"{result.recorded.bytes} bytes -> {result.recorded.uri}")


if __name__ == "__main__":
    main()
