"""`chartly-tool sandbox serve`: what it lists, the faults it arms, the options it refuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chartly_dagster.cli.main import main
from chartly_dagster.sandbox import FAULT_KINDS, run_sandbox
from chartly_dagster.sandbox.endpoints import ROUTES
from chartly_dagster.sandbox.faults import FAULT_SUMMARIES, parse_fault_spec

TOOL = str(Path(sys.executable).parent / "chartly-tool")
WINDOW = {"since": "2026-01-05T00:00:00Z", "until": "2026-01-05T06:00:00Z", "limit": "100"}


def test_every_fault_kind_says_what_it_does() -> None:
    assert FAULT_SUMMARIES.keys() == FAULT_KINDS


def test_list_names_every_endpoint_with_its_pagination_and_every_fault(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "serve", "--list"]) == 0
    out = capsys.readouterr().out
    for path in ROUTES:
        line = next(line for line in out.splitlines() if line.strip().startswith(path))
        assert len(line.split(None, 1)[1]) > 10, line  # a pagination description follows
    for kind in FAULT_KINDS:
        assert any(line.split()[:1] == [kind] for line in out.splitlines()), kind
    assert "cursor in the body" in out and 'Link: <...>; rel="next"' in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_get_root_lists_the_same_endpoints_and_faults() -> None:
    with run_sandbox() as sb, httpx.Client(trust_env=False, timeout=5) as client:
        response = client.get(sb.url("/"))
    assert response.status_code == 200
    index = response.json()
    assert [e["path"] for e in index["endpoints"]] == list(ROUTES)
    events = next(e for e in index["endpoints"] if e["path"] == "/v1/events")
    assert events["pagination"].startswith("cursor in the body")
    assert (events["id_field"], events["time_field"]) == ("id", "occurred_at")
    assert {f["kind"] for f in index["faults"]} == FAULT_KINDS
    assert "--fault KIND[=VALUE]:ENDPOINT" in index["fault_syntax"]


@pytest.mark.parametrize(("spec", "expected"), [
    ("status:/v1/events", {"kind": "status", "endpoint": "/v1/events", "on_request": 1,
                           "times": 1, "status": 503}),
    ("status=429:/v2/orders:3", {"kind": "status", "status": 429, "on_request": 3}),
    ("status=500:/v1/events:2:4", {"on_request": 2, "times": 4}),
    ("slow=1500:*", {"kind": "slow", "endpoint": None, "delay_ms": 1500}),
    ("redirect=307:/v1/feed", {"kind": "redirect", "status": 307}),
    ("stuck_cursor:/v1/events:2", {"kind": "stuck_cursor", "on_request": 2}),
])
def test_fault_specs_parse(spec: str, expected: dict[str, object]) -> None:
    fault = parse_fault_spec(spec)
    assert {key: getattr(fault, key) for key in expected} == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("status", "must look like KIND[=VALUE]:ENDPOINT"),
    ("status:/v1/events:1:2:3", "must look like"),
    ("boom:/v1/events", "unknown kind 'boom'"),
    ("status:/v1/nope", "is not a sandbox path"),
    ("status=abc:/v1/events", "VALUE must be a whole number"),
    ("status=200:/v1/events", "4xx/5xx"),
    ("malformed=3:/v1/events", "takes no =VALUE"),
    ("status:/v1/events:0", "must be >= 1"),
    ("status:/v1/events:-1", "ON_REQUEST must be a whole number"),
    ("status:/v1/events::", "must look like"),
])
def test_bad_fault_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^fault .*{re.escape(message)}"):
        parse_fault_spec(spec)


@pytest.mark.parametrize(("args", "flag", "message"), [
    (["--port", "99999"], "--port", "99999 is not in 0..65535"),
    (["--port", "-1"], "--port", "not in 0..65535"),
    (["--port", "http"], "--port", "'http' is not a whole number"),
    (["--seed", "-3"], "--seed", "not in 0.."),
    (["--events-per-hour", "0"], "--events-per-hour", "0 is not in 1.."),
    (["--events-per-hour", "1e9"], "--events-per-hour", "not a whole number"),
    (["--fault", "status:/nowhere"], "--fault", "not a sandbox path"),
    (["--bogus"], "", "unrecognized arguments: --bogus"),
])
def test_bad_options_are_usage_errors_without_traceback(args: list[str], flag: str,
                                                        message: str) -> None:
    proc = subprocess.run([TOOL, "sandbox", "serve", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr
    if flag:
        assert f"argument {flag}" in proc.stderr


def test_a_non_loopback_host_exits_2_naming_it() -> None:
    proc = subprocess.run([TOOL, "sandbox", "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "not a loopback address" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def served_with_fault() -> Iterator[str]:
    """`sandbox serve` in its own process with a 503 on the 2nd and 3rd /v1/events request."""
    process = subprocess.Popen(
        [TOOL, "sandbox", "serve", "--port", "0",
         "--fault", "status=503:/v1/events:2:2", "--fault", "malformed:/v2/orders"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        assert "status fault on /v1/events from request 2" in line
        yield line.split()[3]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_fault_fires_on_the_requests_it_names(served_with_fault: str) -> None:
    with httpx.Client(trust_env=False, timeout=5) as client:
        statuses = [client.get(f"{served_with_fault}/v1/events", params=WINDOW).status_code
                    for _ in range(4)]
        orders = client.get(f"{served_with_fault}/v2/orders",
                            params={"from": "0", "to": "3600"})
    assert statuses == [200, 503, 503, 200]
    assert orders.status_code == 200
    with pytest.raises(ValueError):
        orders.json()
