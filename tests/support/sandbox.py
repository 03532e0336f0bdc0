"""Sandbox upstream fixtures: a real local HTTP API with deterministic data and faults.

`sandbox` is a fresh server per test (its own fault plan, request log and ordinals), so
faults and request counts never leak between tests; `sandbox_session` is one shared
server for read-only tests that only need data. A test that needs a special config
(auth, rates, seed) uses `run_sandbox(SandboxConfig(...))` directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chartly_dagster.sandbox import Sandbox, run_sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox() as sb:
        yield sb


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Sandbox]:
    with run_sandbox() as sb:
        yield sb
