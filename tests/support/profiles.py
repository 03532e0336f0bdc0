"""Shipped profiles re-pointed at a sandbox on an ephemeral port, plus secrets that match.

The `#dev` variants name http://localhost:8765; tests run their own sandbox on a free
port, so they work on a copy of `profiles/` with that port substituted.
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
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from chartly_dagster.sandbox import Sandbox, SandboxConfig, run_sandbox
from tests.support.paths import REPO

DEMO_PORT = 8765
#: the credentials the sandbox checks, per endpoint, and the secrets the profiles reference
SECRETS = {
    ("sales-api", "token"): "sandbox-token-7f3a9c",
    ("orders-api", "api-key"): "sandbox-orders-key-51d2",
    ("billing-api", "api-key"): "sandbox-billing-key-88e0",
    ("helpdesk", "username"): "support-bot",
    ("helpdesk", "password"): "sandbox-helpdesk-pw-3b1",
}
ENDPOINT_AUTH = {
    "/v1/events": ("bearer", SECRETS[("sales-api", "token")]),
    "/v1/feed": ("bearer", SECRETS[("sales-api", "token")]),
    "/v2/orders": ("api_key_header", "X-Api-Key", SECRETS[("orders-api", "api-key")]),
    "/v1/invoices": ("api_key_query", "api_key", SECRETS[("billing-api", "api-key")]),
    "/v1/metrics": None,
    "/v1/tickets": ("basic", SECRETS[("helpdesk", "username")],
                    SECRETS[("helpdesk", "password")]),
}


def copy_profiles(destination: Path, port: int, source: Path = REPO / "profiles") -> Path:
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


def sandbox_secrets() -> SecretResolver:
    return SecretResolver([MappingSecretProvider(SECRETS)])


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
