"""Helpers for the browser test: `dagster dev` on loopback, a throwaway code location, Chromium.

Everything here is started by the test and torn down by it: a temp DAGSTER_HOME, a code
location file that calls `build_definitions` on profiles re-pointed at the test's sandbox,
`dagster dev` in its own process group (SIGTERM to the group, then SIGKILL), and Debian's
Chromium driven through Playwright (never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.support.net import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
LOCATION = "chartly_ui_test"

T = TypeVar("T")

CODE_LOCATION = '''\
"""Written by tests/e2e/test_ui_browser.py: the shipped profiles, re-pointed at its sandbox."""
from chartly_dagster.integration import (
    ChartlyResource,
    SecretProviderName,
    SecretsConfig,
    build_definitions,
)

defs = build_definitions(
    {profiles!r},
    resource=ChartlyResource(env="dev", secrets=SecretsConfig(
        providers=[SecretProviderName.FILE], secrets_dir_env_var="CHARTLY_SECRETS_DIR")),
)
'''


def write_code_location(folder: Path, profiles: Path) -> Path:
    """A definitions file and a workspace.yaml naming it; returns the workspace path."""
    (folder / "ui_test_definitions.py").write_text(
        CODE_LOCATION.format(profiles=str(profiles)), encoding="utf-8")
    workspace = folder / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_file:\n"
        "      relative_path: ui_test_definitions.py\n"
        f"      location_name: {LOCATION}\n"
        f"      working_directory: {folder}\n", encoding="utf-8")
    return workspace


def write_dagster_home(home: Path) -> Path:
    """SQLite storage (the default) with telemetry off and the run queue `dagster dev` uses."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "  config:\n    max_concurrent_runs: 4\n", encoding="utf-8")
    return home


class GiveUp(AssertionError):
    """Raised by a `wait_for` probe when waiting longer cannot help (a failed run, a crash)."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             interval: float = 0.5, diagnostics: Callable[[], str] = lambda: "") -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except GiveUp:
            raise
        except Exception as exc:  # the server may not answer yet
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} "
                         f"(last error: {last_error!r}){diagnostics()}")


@dataclass
class DagsterDev:
    """A running `dagster dev` (webserver + daemon + code server) on loopback."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n--- dagster dev log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """A raw GraphQL POST, for readiness polling before the client can fetch a schema."""
        response = requests.post(f"{self.url}/graphql", timeout=10,
                                 json={"query": query, "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def location_loaded(self) -> bool:
        data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename
              ... on PythonError { message } } } } } }""")
        for entry in data["workspaceOrError"]["locationEntries"]:
            if entry["name"] != LOCATION or entry["loadStatus"] != "LOADED":
                continue
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise GiveUp(f"code location failed to load: {loaded['message']}")
            return loaded.get("__typename") == "RepositoryLocation"
        return False


def _kill_group(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # The group, not only the leader: a code server can outlive `dagster dev` on shutdown.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def run_dagster_dev(workspace: Path, home: Path, env: Mapping[str, str], log: Path,
                    load_timeout: float = 60) -> Iterator[DagsterDev]:
    """`dagster dev -w workspace` on a free loopback port; yields once the location loaded."""
    port = free_port()
    dagster = Path(sys.executable).parent / "dagster"
    child_env = {**os.environ, **env, "DAGSTER_HOME": str(home),
                 "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port),
             "--live-data-poll-rate", "1000"],
            cwd=workspace.parent, env=child_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    dev = DagsterDev(process, port, log)
    try:
        def loaded() -> bool:
            if process.poll() is not None:
                raise GiveUp(f"dagster dev exited with {process.returncode}"
                                     f"{dev.log_tail()}")
            return dev.location_loaded()

        wait_for("the code location to load in dagster dev", loaded, load_timeout,
                 diagnostics=dev.log_tail)
        yield dev
    finally:
        _kill_group(process, grace=15)


def require_chromium() -> Path:
    """Debian's Chromium, or a clear failure (never a skip, never a browser download)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        raise AssertionError(
            f"{CHROMIUM} is missing: the UI test drives Debian's Chromium. Install it with "
            "`./scripts/install-system-deps.sh` (or `make system-deps`); do not run "
            "`playwright install`.")
    return CHROMIUM
