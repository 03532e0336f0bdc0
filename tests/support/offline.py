"""Helpers for the offline conformance tests: a valid profile document, a profiles tree in a
temporary folder, and an in-process CLI runner."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from chartly_dagster.cli.main import main
from tests.support.paths import PROFILES

WINDOW = ("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")
SALES_EVENTS = "tenant-demo/proj-sales::connector/sales-events@1.0.0"

_BASE: dict[str, Any] = {
    "apiVersion": "chartly.io/v1alpha1",
    "kind": "Profile",
    "metadata": {
        "kind": "connector",
        "name": "widgets",
        "namespace": "tenant-test/proj-test",
        "version": "1.0.0",
        "description": "test profile",
        "owners": ["team:test"],
    },
    "spec": {
        "envs": ["staging"],
        "transport": {"baseUrl": "https://api.widgets.example.invalid"},
        "egressPolicy": {"dnsAllowlist": ["api.widgets.example.invalid"]},
        "auth": {"mode": "bearer", "secretRef": {"name": "widgets-api", "key": "token"}},
        "request": {"path": "/v1/widgets", "headers": {"Accept": "application/json"}},
        "records": {"path": "data", "idField": "id", "timeField": "ts"},
        "window": {"startParam": "since", "endParam": "until"},
        "pagination": {"mode": "cursor", "pageSize": 100, "limitParam": "limit",
                       "requestParam": "cursor", "responseField": "next"},
        "rateLimit": {"maxRequestsPerMinute": 60},
        "partitions": {"cadence": "daily", "start": "2026-01-01T00:00:00Z"},
    },
    "variants": {
        "dev": {"spec": {"envs": ["dev"],
                         "transport": {"baseUrl": "http://localhost:8765"},
                         "egressPolicy": {"dnsAllowlist": ["localhost"],
                                          "allowedCidrs": ["127.0.0.0/8"],
                                          "allowedPorts": [8765]}}},
    },
}
REF = "tenant-test/proj-test::connector/widgets@1.0.0"


def base_doc() -> dict[str, Any]:
    """A fresh, valid profile document (cursor pagination, bearer auth, a `dev` variant)."""
    return copy.deepcopy(_BASE)


def write_profile(folder: Path, doc: Any, name: str = "widgets.yaml") -> Path:
    """Write `doc` as YAML (or `doc` itself when it is already text) under `folder`."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run `chartly-tool` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plan_args(ref: str = SALES_EVENTS, *, env: str = "staging", tenant: str = "tenant-demo",
              project: str = "proj-sales", profiles: Path = PROFILES,
              window: tuple[str, str] = WINDOW, command: str = "plan",
              fmt: str = "json") -> list[str]:
    return ["connector-tester", command, "--env", env, "--tenant", tenant, "--project", project,
            "--connector-profile", ref, "--window-start", window[0], "--window-end", window[1],
            "--format", fmt, "--profiles-dir", str(profiles)]


def json_out(text: str) -> Any:
    return json.loads(text)
