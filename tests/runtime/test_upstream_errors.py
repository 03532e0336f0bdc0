"""Hostile or broken upstream bodies end as classified errors, never as tracebacks.

Each case is a real response from a small server on 127.0.0.1: bad or truncated
gzip/deflate, an encoding we never asked for, a cut connection, bodies that are not JSON
or nest past the parser's limit, records too deep to canonicalize, and 4xx bodies whose
excerpt must reach the error message scrubbed and bounded. Retry decisions are asserted
through what the server saw (request counts), not through messages.
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartly_dagster.cli.main import main
from chartly_dagster.core.errors import ChartlyError, ExitCode, InvalidArgument
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.doctor import run_doctor
from chartly_dagster.runtime.envelope.builder import MAX_RECORD_DEPTH
from chartly_dagster.runtime.errors import (
    ConnectionLost,
    EgressRefused,
    MalformedResponse,
    Reason,
    UnsupportedRecord,
)
from chartly_dagster.runtime.executor import NetworkOptions, Seams, WindowTarget, fetch_window
from chartly_dagster.runtime.http import EXCERPT_CHARS, build_client
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from tests.support.egress import API_HOST, FakeResolver, make_profile, reply, serve
from tests.support.live import RecordingSleep

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")

DAY = Window.parse("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")
RECORDS = [{"id": f"r{i}", "ts": f"2026-02-01T0{i}:00:00Z", "v": i} for i in range(3)]
BODY = json.dumps(RECORDS).encode()
SECRET = "s3cr3t-upstream-token-9c41"
LOOPBACK = ["127.0.0.0/8"]


def _nested(depth: int) -> dict[str, Any]:
    """A record `depth` levels deep (the record object itself is level 1)."""
    value: Any = {"leaf": True}
    for _ in range(depth - 2):
        value = {"x": value}
    return {"id": "deep", "ts": "2026-02-01T05:00:00Z", "payload": value}


def _get(route, **profile: Any):
    """One GET through the guarded client; returns the response or the raised error."""
    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        with build_client(make_profile(base, cidrs=LOOPBACK, **profile), env="dev",
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            try:
                return client.get(f"{base}/events")
            except ChartlyError as exc:
                return exc


def _fetch(route, tmp_path: Path, *, auth: dict[str, Any] | None = None,
           secrets: SecretResolver | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """A whole window through `fetch_window`: (result or raised error, requests seen)."""
    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolved = make_profile(base, cidrs=LOOPBACK, auth=auth)
        try:
            outcome: Any = fetch_window(
                resolved, DAY, build_plan(resolved, DAY),
                target=WindowTarget.at(str(tmp_path / "out")),
                network=NetworkOptions("dev", secrets),
                seams=Seams(resolver=FakeResolver({API_HOST: ["127.0.0.1"]}),
                            sleep=RecordingSleep(), rng=random.Random(0)))
        except ChartlyError as exc:
            outcome = exc
    return outcome, srv.requests


def _encoded(body: bytes, encoding: str):
    def route(handler) -> None:
        reply(handler, 200, body, {"Content-Encoding": encoding})
    return route


GZ = gzip.compress(BODY)


@pytest.mark.parametrize(("body", "encoding", "expected"), [
    (BODY, "gzip", "invalid gzip body"),
    (BODY, "deflate", "invalid deflate body"),
    (GZ[: len(GZ) // 2], "gzip", "truncated"),
    (zlib.compress(BODY)[:-6], "deflate", "truncated"),
    (zlib.compress(BODY) + b"trailing", "deflate", "after the end of the deflate stream"),
    (GZ + b"not another member", "gzip", "invalid gzip body"),
], ids=["not-gzip", "not-deflate", "gzip-truncated", "deflate-truncated",
        "deflate-trailing", "gzip-trailing-garbage"])
def test_bodies_that_do_not_decode_are_malformed_responses(body, encoding, expected) -> None:
    error = _get(_encoded(body, encoding))
    assert isinstance(error, MalformedResponse), error
    assert expected in error.message
    assert error.retryable and error.exit_code == ExitCode.VALIDATION_FAILED
    assert error.code == "malformed_response" and error.platform_code == "invalid_argument"


def test_concatenated_gzip_members_are_all_decoded() -> None:
    half = len(BODY) // 2
    response = _get(_encoded(gzip.compress(BODY[:half]) + gzip.compress(BODY[half:]), "gzip"))
    assert response.content == BODY


def test_empty_body_with_a_content_encoding_is_empty() -> None:
    response = _get(_encoded(b"", "gzip"))
    assert response.content == b""


def test_an_encoding_never_asked_for_is_refused() -> None:
    error = _get(_encoded(b"\x1b\x03\x00\xf8\xa5", "br"))  # brotli is not advertised
    assert isinstance(error, EgressRefused)
    assert error.reason == Reason.UNSUPPORTED_CONTENT_ENCODING


def test_a_body_cut_short_by_the_peer_is_a_lost_connection() -> None:
    def cut(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BODY) * 2))
        handler.end_headers()
        handler.wfile.write(BODY)
        handler.close_connection = True

    error = _get(cut)
    assert isinstance(error, ConnectionLost) and error.retryable
    assert error.exit_code == ExitCode.ERROR and "network error" in error.message


def test_bad_gzip_that_persists_is_retried_then_fails_with_exit_4(tmp_path: Path) -> None:
    error, requests = _fetch(_encoded(BODY, "gzip"), tmp_path)
    assert isinstance(error, MalformedResponse) and isinstance(error, InvalidArgument)
    assert len(requests) == 4  # retried like a cut connection: maxAttempts is 4
    assert list((tmp_path / "out").rglob("*.parquet")) == []


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 1100 + b"]" * 1100, "depth limit exceeded"),
    (b'[{"id": "a", "ts": "2026-02-01T01:00:00Z", "v": 1' + b"0" * 400 + b"}]",
     "number is infinity"),
    (b'[{"id": "a", "ts": "2026-02-01T01:00:00Z"', "unexpected end of data"),
], ids=["nested-past-1024", "number-too-big", "truncated-json"])
def test_bodies_the_json_parser_refuses_name_its_reason(tmp_path: Path, body: bytes,
                                                        reason: str) -> None:
    def route(handler) -> None:
        reply(handler, 200, body)

    error, requests = _fetch(route, tmp_path)
    assert isinstance(error, MalformedResponse) and reason in error.message
    assert "not valid JSON" in error.message and len(requests) == 4


def test_a_record_nested_too_deep_is_unsupported_and_not_retried(tmp_path: Path) -> None:
    records = [RECORDS[0], _nested(MAX_RECORD_DEPTH + 1)]

    def route(handler) -> None:
        reply(handler, 200, json.dumps(records).encode())

    error, requests = _fetch(route, tmp_path)
    assert isinstance(error, UnsupportedRecord) and not error.retryable
    assert error.exit_code == ExitCode.VALIDATION_FAILED and error.code == "unsupported_record"
    assert f"nests {MAX_RECORD_DEPTH + 1} levels" in error.message
    assert f"at most {MAX_RECORD_DEPTH} levels" in error.message and "'deep'" in error.message
    assert len(requests) == 1


def test_a_record_at_the_depth_limit_is_stored(tmp_path: Path) -> None:
    records = [*RECORDS, _nested(MAX_RECORD_DEPTH)]

    def route(handler) -> None:
        reply(handler, 200, json.dumps(records).encode())

    result, _ = _fetch(route, tmp_path)
    assert result.records == len(records) and result.outcome == "complete"


def test_a_4xx_quotes_the_upstream_body_scrubbed_and_bounded(tmp_path: Path) -> None:
    bodies = {
        "short": json.dumps({"error": "_size must be <= 1000"}).encode(),
        # the token sits across the excerpt's cut: scrubbed whole, never shown in part
        "long": json.dumps({"error": "x" * (EXCERPT_CHARS - 30), "echo": SECRET,
                            "more": "y" * 10_000}).encode(),
    }
    secrets = SecretResolver([MappingSecretProvider({"api/token": SECRET})])
    auth = {"mode": "bearer", "secretRef": {"name": "api", "key": "token"}}
    messages = {}
    for name, body in bodies.items():
        def route(handler, body: bytes = body) -> None:
            reply(handler, 400, body)

        error, requests = _fetch(route, tmp_path / name, auth=auth, secrets=secrets)
        assert isinstance(error, InvalidArgument) and error.status == 400
        assert len(requests) == 1  # a 4xx is permanent
        messages[name] = error.message
    assert 'upstream said: {"error": "_size must be <= 1000"}' in messages["short"]
    said = messages["long"].split("upstream said: ", 1)[1]
    assert len(said) <= EXCERPT_CHARS and said.endswith("…")
    assert SECRET not in messages["long"] and SECRET[:8] not in messages["long"]


def _write_profile(folder: Path, base_url: str) -> None:
    doc = make_profile(base_url, allowlist=["localhost"], cidrs=[*LOOPBACK, "::1/128"],
                       envs=("dev",)).document
    doc["spec"]["retry"] = {"maxAttempts": 2, "backoffMs": 1, "maxBackoffMs": 1}
    folder.mkdir(parents=True)
    (folder / "events.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")


@pytest.mark.parametrize(("route", "exit_code", "code"), [
    (_encoded(BODY, "gzip"), 4, "malformed_response"),
    (lambda h: reply(h, 200, json.dumps([_nested(MAX_RECORD_DEPTH + 1)]).encode()), 4,
     "unsupported_record"),
    (lambda h: reply(h, 200, b"[" * 1100 + b"]" * 1100), 4, "malformed_response"),
], ids=["bad-gzip", "record-too-deep", "body-too-deep"])
def test_cli_run_reports_a_classified_error_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], route, exit_code: int,
        code: str) -> None:
    with serve(route) as srv:
        _write_profile(tmp_path / "profiles", f"http://localhost:{srv.port}")
        argv = ["connector-tester", "run", "--env", "dev", "--tenant", "acme", "--project",
                "core", "--connector-profile", "acme/core::connector/events@1.0.0",
                "--profiles-dir", str(tmp_path / "profiles"), "--apply", "--output",
                str(tmp_path / "out"), "--window-start", "2026-02-01T00:00:00Z",
                "--window-end", "2026-02-02T00:00:00Z"]
        status = main(argv)
    out, err = capsys.readouterr()
    assert status == exit_code
    assert json.loads(out)["validation"]["code"] == code
    assert "Traceback" not in out + err


def test_raw_deflate_without_the_zlib_wrapper_is_decoded() -> None:
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = squeeze.compress(BODY) + squeeze.flush()
    assert _get(_encoded(raw, "deflate")).content == BODY


def test_doctor_categories_come_from_the_error_classes() -> None:
    stall = threading.Event()

    def slow(handler) -> None:
        stall.wait(5)  # longer than the 150 ms read timeout; released when the test ends
        reply(handler, 200, BODY)

    try:
        with serve(slow) as srv:
            base = f"http://{API_HOST}:{srv.port}"
            report = run_doctor(make_profile(base, cidrs=LOOPBACK, timeout_ms=150), env="dev",
                                secrets=None, resolver=FakeResolver({API_HOST: ["127.0.0.1"]}))
            stall.set()
    finally:
        stall.set()
    assert (report.category, report.exit_code) == ("timeout", ExitCode.ERROR)
    assert report.message == "timed out: UpstreamTimeout"
    dead = run_doctor(make_profile(f"http://{API_HOST}:9", cidrs=LOOPBACK, ports=[9]),
                      env="dev", secrets=None, resolver=FakeResolver({}))
    assert (dead.category, dead.message) == (
        "network", f"cannot connect to {API_HOST}:9 (ConnectFailed)")
