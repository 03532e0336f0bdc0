"""Fixtures for the Dagster integration tests: profiles pointed at a live sandbox.

The shipped dev variants name port 8765; tests run the sandbox on an ephemeral port, so
the profiles are copied to a temp folder with the dev variant's baseUrl and allowedPorts
rewritten (and its golden dropped, since the golden pins port 8765).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

from chartly_dagster.sandbox import Sandbox
from tests.support.profiles import copy_profiles

SECRETS = {"CHARTLY_SECRET_ORDERS_API_API_KEY": "test-orders-key",
           "CHARTLY_SECRET_BILLING_API_API_KEY": "test-billing-key",
           "CHARTLY_SECRET_SALES_API_TOKEN": "test-sales-token",
           "CHARTLY_SECRET_HELPDESK_USERNAME": "test-user",
           "CHARTLY_SECRET_HELPDESK_PASSWORD": "test-password"}


@pytest.fixture
def sandbox_profiles(sandbox: Sandbox, tmp_path: Path) -> Path:
    """The shipped profiles, dev variants pointed at this test's sandbox."""
    return copy_profiles(tmp_path / "profiles", sandbox.port)


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
