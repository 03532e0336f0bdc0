"""Fixtures for the Dagster integration tests: profiles pointed at a live sandbox.

The shipped dev variants name port 8765; tests run the sandbox on an ephemeral port, so
the profiles are copied to a temp folder with the dev variant's baseUrl and allowedPorts
rewritten (and its golden dropped, since the golden pins port 8765).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, instance_for_test

from chartly_dagster.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
SECRETS = {"CHARTLY_SECRET_ORDERS_API_API_KEY": "test-orders-key",
           "CHARTLY_SECRET_BILLING_API_API_KEY": "test-billing-key",
           "CHARTLY_SECRET_SALES_API_TOKEN": "test-sales-token",
           "CHARTLY_SECRET_HELPDESK_USERNAME": "test-user",
           "CHARTLY_SECRET_HELPDESK_PASSWORD": "test-password"}


def point_profiles_at(source: Path, target: Path, port: int) -> Path:
    """Copy a profiles tree to `target/profiles`, dev variants rewritten to `port`."""
    dest = target / "profiles"
    shutil.copytree(source, dest)
    for path in sorted(dest.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        dev = doc.get("variants", {}).get("dev")
        if dev is None:
            continue
        spec = dev.setdefault("spec", {})
        spec["transport"] = {**spec.get("transport", {}), "baseUrl": f"http://localhost:{port}"}
        spec["egressPolicy"] = {**spec.get("egressPolicy", {}), "allowedPorts": [port]}
        spec["golden"] = None
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


@pytest.fixture
def sandbox_profiles(sandbox: Sandbox, tmp_path: Path) -> Path:
    """The shipped profiles, dev variants pointed at this test's sandbox."""
    return point_profiles_at(REPO / "profiles", tmp_path, sandbox.port)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Secrets for every shipped profile through the env provider (the sandbox accepts any)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A real, temporary instance (SQLite storage under tmp) as `dagster dev` would use."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance
