"""The live-sandbox fixture family: sandbox servers and the shipped profiles pointed at one.

The sandbox is a real local HTTP API with deterministic data and faults. `sandbox` is a
fresh server per test (its own fault plan, request log and ordinals), so faults and request
counts never leak between tests; `sandbox_session` is one shared server for read-only tests
that only need data. A test that needs a special config (auth, rates, seed) uses
`run_sandbox(sandbox_config(...))` or `run_sandbox(SandboxConfig(...))` directly.

The shipped `#dev` variants name http://localhost:8765; tests run their own sandbox on a
free port, so they work on a copy of `profiles/` with that port substituted
(`copy_profiles`). The runtime tests' `Live` helper (tests/support/live.py) builds on this.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from chartly_dagster.core.catalog import ProfileCatalog, ResolvedProfile
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.sandbox import Sandbox, SandboxConfig, run_sandbox
from tests.support.paths import PROFILES
from tests.support.secrets import SECRET_ENV, SECRETS

#: the port the shipped `#dev` variants name (`make demo` runs the sandbox there)
DEMO_PORT = 8765
#: how the sandbox authenticates each endpoint: the way its shipped profile does
ENDPOINT_AUTH = {
    "/v1/events": ("bearer", SECRETS[("sales-api", "token")]),
    "/v1/feed": ("bearer", SECRETS[("sales-api", "token")]),
    "/v2/orders": ("api_key_header", "X-Api-Key", SECRETS[("orders-api", "api-key")]),
    "/v1/invoices": ("api_key_query", "api_key", SECRETS[("billing-api", "api-key")]),
    "/v1/metrics": None,
    "/v1/tickets": ("basic", SECRETS[("helpdesk", "username")],
                    SECRETS[("helpdesk", "password")]),
}


def copy_profiles(destination: Path, port: int, source: Path = PROFILES) -> Path:
    """Copy a profiles tree, pointing every dev variant at `port` instead of 8765.

    The dev goldens are dropped: they pin port 8765, which a re-pointed profile can never
    match.
    """
    shutil.copytree(source, destination)
    for path in sorted(destination.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        dev = doc.get("variants", {}).get("dev")
        if dev is None:
            continue
        spec = dev.setdefault("spec", {})
        spec["transport"] = {**spec.get("transport", {}), "baseUrl": f"http://localhost:{port}"}
        spec["egressPolicy"] = {**spec.get("egressPolicy", {}), "allowedPorts": [port]}
        spec["golden"] = None
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return destination


def sandbox_config(**overrides: object) -> SandboxConfig:
    """A sandbox that authenticates each endpoint the way its shipped profile does."""
    return SandboxConfig(endpoint_auth=dict(ENDPOINT_AUTH), **overrides)  # type: ignore[arg-type]


@dataclass
class LiveProfiles:
    """A running sandbox plus the shipped profiles pointed at it."""

    sandbox: Sandbox
    profiles_dir: Path
    catalog: ProfileCatalog

    def resolve(self, ref: str) -> ResolvedProfile:
        return self.catalog.resolve(parse_ref(ref))


@pytest.fixture
def live_profiles(tmp_path: Path) -> Iterator[LiveProfiles]:
    with run_sandbox(sandbox_config()) as sb:
        folder = copy_profiles(tmp_path / "profiles", sb.port)
        catalog = ProfileCatalog.load(folder)
        catalog.raise_for_issues()
        yield LiveProfiles(sb, folder, catalog)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox() as sb:
        yield sb


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Sandbox]:
    with run_sandbox() as sb:
        yield sb


@pytest.fixture
def sandbox_profiles(sandbox: Sandbox, tmp_path: Path) -> Path:
    """The shipped profiles, dev variants pointed at this test's sandbox."""
    return copy_profiles(tmp_path / "profiles", sandbox.port)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Secrets for every shipped profile through the env provider."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    return SECRET_ENV
