"""Record a window against the sandbox, replay it with no network: same content, same hashes.

Every shipped profile (one per pagination mode) is recorded through `fetch_window`, then
replayed with the network seam rigged to fail the test on any connection. Tampering with
one byte of a recording, or replaying it under another plan, is refused by name; no
recorded byte holds a secret, whichever way the window ended.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote

import pytest

from chartly_dagster.core.catalog import ResolvedProfile, ref_of
from chartly_dagster.core.errors import ChartlyError, Unauthenticated, UpstreamUnavailable
from chartly_dagster.core.plan import Limits, build_plan
from chartly_dagster.core.profile import ConnectorProfile
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.egress import GuardedNetworkBackend
from chartly_dagster.runtime.errors import (
    RecordingCorrupt,
    RecordingMismatch,
    RecordingNotFound,
)
from chartly_dagster.runtime.executor import (
    Checkpoint,
    NetworkOptions,
    PageProgress,
    RunEvent,
    Seams,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from chartly_dagster.runtime.recording import RecordTo, ReplayFrom, recording_enabled
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from chartly_dagster.runtime.storage import Storage, read_window_file
from chartly_dagster.sandbox import Fault
from tests.support.egress import API_HOST, FakeResolver, make_profile, reply, serve
from tests.support.live import (
    ALL_SECRETS,
    DAY,
    PROFILES,
    Live,
    RecordingSleep,
    rows_without_wall_clock,
)
from tests.support.secrets import SECRETS, sandbox_secrets

_REAL_CONNECT_TCP = GuardedNetworkBackend.connect_tcp
_REAL_SOCKET_CONNECT = socket.socket.connect
_REAL_CREATE_CONNECTION = socket.create_connection


class NetworkTrap:
    """Fails any connection while armed: at the egress backend (the network seam every
    guarded connection goes through) and at the socket below it."""

    def __init__(self) -> None:
        self.armed = False
        self.attempts: list[str] = []

    def wrap(self, real: Callable[..., object]) -> Callable[..., object]:
        def guarded(*args: object, **kwargs: object) -> object:
            if self.armed:
                self.attempts.append(repr(args[1:3]))
                raise AssertionError("a replay opened a connection")
            return real(*args, **kwargs)
        return guarded


@pytest.fixture
def trap(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkTrap]:
    net = NetworkTrap()
    monkeypatch.setattr(GuardedNetworkBackend, "connect_tcp", net.wrap(_REAL_CONNECT_TCP))
    monkeypatch.setattr(socket.socket, "connect", net.wrap(_REAL_SOCKET_CONNECT))
    monkeypatch.setattr(socket, "create_connection", net.wrap(_REAL_CREATE_CONNECTION))
    yield net


def record(live: Live, name: str, root: Path, *, window: Window = DAY,
           resumable: bool = False, resume: Checkpoint | None = None,
           on_progress: Callable[[RunEvent], None] | None = None) -> WindowResult:
    resolved = live.resolve(name)
    return fetch_window(resolved, window, build_plan(resolved, window),
                        target=WindowTarget.at(str(live.out), resumable=resumable),
                        network=NetworkOptions("dev", sandbox_secrets(),
                                               recording=RecordTo(Storage.parse(str(root)))),
                        resume=resume, on_progress=on_progress,
                        seams=Seams(sleep=RecordingSleep()))


def replay(live: Live, name: str, source: Path | str, out: Path, *, window: Window = DAY,
           limits: Limits | None = None, response_hash: str | None = None) -> WindowResult:
    resolved = live.resolve(name)
    return fetch_window(resolved, window, build_plan(resolved, window, limits),
                        target=WindowTarget.at(str(out)),
                        network=NetworkOptions("dev", recording=ReplayFrom(str(source),
                                                                           response_hash)))


def every_recorded_byte(root: Path) -> bytes:
    """Every file under `root`, gzip bodies both as stored and decompressed."""
    chunks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        chunks.append(data)
        if path.suffix == ".gz":
            chunks.append(gzip.decompress(data))
    return b"\n".join(chunks)


#: the secrets each profile's run resolves (a run can only scrub what it knows)
RUN_SECRETS = {
    "sales-events": [SECRETS[("sales-api", "token")]],
    "sales-feed": [SECRETS[("sales-api", "token")]],
    "orders": [SECRETS[("orders-api", "api-key")]],
    "invoices": [SECRETS[("billing-api", "api-key")]],
    "tickets": [SECRETS[("helpdesk", "username")], SECRETS[("helpdesk", "password")]],
    "metrics": [],
}
BASIC = base64.b64encode(f"{SECRETS[('helpdesk', 'username')]}:"
                         f"{SECRETS[('helpdesk', 'password')]}".encode())


def assert_no_secret(root: Path, name: str) -> None:
    blob = every_recorded_byte(root)
    for secret in RUN_SECRETS[name]:
        for needle in (secret.encode(), quote(secret, safe="").encode()):
            assert needle not in blob, secret
    assert BASIC not in blob


def recording_of(root: Path) -> Path:
    (folder,) = root.rglob("*.recording")
    return folder


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_record_then_replay_gives_the_same_content_for_every_profile(
        live: Live, tmp_path: Path, name: str, trap: NetworkTrap) -> None:
    root = tmp_path / "rec"
    recorded = record(live, name, root)
    assert recorded.recorded is not None and recorded.recorded.responses == recorded.requests
    assert recorded.recorded.bytes > 0
    assert recorded.checkpoint.response_hash == recorded.recorded.response_hash
    results = recorded.results_section()
    assert results["response_hash"] == recorded.recorded.response_hash
    assert results["checkpoint"]["payload"]["response_hash"] == results["response_hash"]

    trap.armed = True
    replayed = replay(live, name, root, tmp_path / "replay")
    assert trap.attempts == []
    assert replayed.content_hash == recorded.content_hash
    assert replayed.recorded is not None and replayed.recorded.replayed
    assert replayed.recorded.response_hash == recorded.recorded.response_hash
    assert replayed.recorded.content_hash == recorded.content_hash
    assert (replayed.records, replayed.pages) == (recorded.records, recorded.pages)
    assert (rows_without_wall_clock(read_window_file(replayed.uri))
            == rows_without_wall_clock(read_window_file(recorded.uri)))
    assert_no_secret(root, name)


def test_recording_keeps_every_response_and_only_the_headers_read(live: Live,
                                                                    tmp_path: Path) -> None:
    path = PROFILES["tickets"][2]
    live.sandbox.faults.add(Fault("status", endpoint=path, status=429, retry_after_s=3,
                                  on_request=2))
    live.sandbox.faults.add(Fault("status", endpoint=path, status=503, on_request=4))
    root = tmp_path / "rec"
    recorded = record(live, "tickets", root)
    lines = [json.loads(line) for line in
             (recording_of(root) / "responses.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines].count(429) == 1 and len(lines) == recorded.requests
    assert lines[1]["page"] == lines[2]["page"] == 2  # a retry repeats its page
    assert lines[1]["headers"]["retry-after"] == "3"
    assert all(set(r["headers"]) <= {"content-type", "link", "retry-after", "x-total-count"}
               for r in lines)
    assert any("link" in r["headers"] for r in lines)
    assert all(r["request"]["method"] == "GET" for r in lines)
    manifest = json.loads((recording_of(root) / "recording.json").read_text())
    assert manifest["response_hash"] == recorded.recorded.response_hash
    assert manifest["plan_hash"] == recorded.plan_hash and len(manifest["responses"]) == len(lines)
    bodies = list((recording_of(root) / "bodies").glob("*.gz"))
    assert bodies and all(p.stem == json.loads(json.dumps(p.stem)) for p in bodies)

    replayed = replay(live, "tickets", root, tmp_path / "replay")
    assert replayed.content_hash == recorded.content_hash
    assert replayed.retries == recorded.retries == 2  # the recorded failures replay too


def test_query_credentials_are_stripped_from_recorded_requests(live: Live,
                                                               tmp_path: Path) -> None:
    root = tmp_path / "rec"
    name = "invoices"
    record(live, name, root)  # apiKeyQuery: the key travels as ?api_key=
    text = (recording_of(root) / "responses.jsonl").read_text()
    assert "api_key" not in text
    sent = [query for _, path, query in live.sandbox.request_log
            if path == PROFILES["invoices"][2]]
    assert sent and all("api_key" in query for query in sent)  # it was sent, not recorded
    assert_no_secret(root, name)


@pytest.mark.parametrize("name", ["sales-events", "orders", "invoices", "tickets"])
def test_failure_paths_leave_no_secret_in_recorded_bytes(live: Live, tmp_path: Path,
                                                         name: str) -> None:
    """401 mid-window, exhausted 503s, a body that is no JSON: nothing published, and the
    records staged for a resume hold no secret either."""
    path = PROFILES[name][2]
    root = tmp_path / "rec"
    for fault, error in ((Fault("status", endpoint=path, status=401, on_request=2),
                          Unauthenticated),
                         (Fault("status", endpoint=path, status=503, on_request=2,
                                times=None), UpstreamUnavailable),
                         (Fault("malformed", endpoint=path, on_request=2, times=None),
                          ChartlyError)):
        live.sandbox.faults.clear()
        live.sandbox.clear_requests()
        live.sandbox.faults.add(fault)
        with pytest.raises(error):
            record(live, name, root, resumable=True, on_progress=lambda event: None)
        assert not root.exists() or not list(root.rglob("recording.json"))
        assert list(live.out.rglob("responses.jsonl"))  # staged for a resume
    assert_no_secret(live.out, name)
    live.sandbox.faults.clear()
    # An upstream that echoes every credential back in a redirect it sends.
    echo = "&".join(f"k{i}={quote(secret, safe='')}" for i, secret in enumerate(ALL_SECRETS))
    live.sandbox.faults.add(Fault("redirect", endpoint=path, location=f"{path}?{echo}",
                                  on_request=2))
    try:
        record(live, name, root, resumable=True, on_progress=lambda event: None)
    except ChartlyError:
        pass
    assert [r for r in every_recorded_byte(live.out).splitlines() if b'"redirects":["' in r]
    assert_no_secret(live.out, name)
    assert_no_secret(root, name)
    live.sandbox.faults.clear()
    record(live, name, root)
    assert_no_secret(root, name)
    assert_no_secret(live.out, name)


def test_a_resumed_window_continues_its_recording(live: Live, tmp_path: Path) -> None:
    path = PROFILES["tickets"][2]
    root = tmp_path / "rec"
    live.sandbox.faults.add(Fault("status", endpoint=path, status=500, on_request=3,
                                  times=None))
    progress: list[PageProgress] = []

    def on_progress(event: RunEvent) -> None:
        if isinstance(event, PageProgress):
            progress.append(event)

    with pytest.raises(UpstreamUnavailable):
        record(live, "tickets", root, resumable=True, on_progress=on_progress)
    checkpoint = Checkpoint.from_contract(progress[-1].checkpoint.to_contract())
    assert checkpoint.pages == 2 and checkpoint.responses == 2
    live.sandbox.faults.clear()
    resumed = record(live, "tickets", root, resumable=True, resume=checkpoint,
                     on_progress=on_progress)
    assert resumed.resumed_from_page == 2
    assert resumed.recorded is not None and resumed.recorded.responses == resumed.pages

    fresh = record(live, "tickets", tmp_path / "fresh")
    assert fresh.recorded is not None
    assert resumed.recorded.response_hash == fresh.recorded.response_hash
    replayed = replay(live, "tickets", root, tmp_path / "replay")
    assert replayed.content_hash == resumed.content_hash == fresh.content_hash


def test_a_checkpoint_without_recorded_responses_refetches_the_window(live: Live,
                                                                      tmp_path: Path) -> None:
    path = PROFILES["tickets"][2]
    live.sandbox.faults.add(Fault("status", endpoint=path, status=500, on_request=3,
                                  times=None))
    progress: list[PageProgress] = []
    with pytest.raises(UpstreamUnavailable):
        live.fetch("tickets", DAY, on_page=progress.append)  # not recorded
    checkpoint = Checkpoint.from_contract(progress[-1].checkpoint.to_contract())
    assert checkpoint.responses is None
    live.sandbox.faults.clear()
    result = record(live, "tickets", tmp_path / "rec", resumable=True, resume=checkpoint,
                    on_progress=lambda event: None)
    assert result.resumed_from_page == 0
    assert result.recorded is not None and result.recorded.responses == result.pages


@pytest.mark.parametrize("target", ["body", "responses", "manifest"])
def test_one_changed_byte_fails_the_replay_naming_window_and_page(
        live: Live, tmp_path: Path, target: str) -> None:
    root = tmp_path / "rec"
    recorded = record(live, "tickets", root)
    folder = recording_of(root)
    lines = (folder / "responses.jsonl").read_bytes().splitlines(True)
    third = json.loads(lines[2])
    if target == "body":
        path = folder / "bodies" / f"{third['body'].removeprefix('sha256:')}.gz"
        offset = len(path.read_bytes()) // 2
    elif target == "responses":
        path = folder / "responses.jsonl"
        offset = sum(len(line) for line in lines[:2]) + lines[2].index(b'"status"') + 10
    else:
        path = folder / "recording.json"
        offset = path.read_bytes().index(b'"response_hash":"sha256:') + 30
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingCorrupt) as caught:
        replay(live, "tickets", root, tmp_path / "replay",
               response_hash=recorded.recorded.response_hash if recorded.recorded else None)
    message = caught.value.message
    assert "window 2026-02-01T00:00:00Z--2026-02-02T00:00:00Z" in message
    if target != "manifest":
        assert "response 3 (page 3)" in message
    assert caught.value.exit_code == 4
    assert list((tmp_path / "replay").rglob("*.parquet")) == []


def test_replay_refuses_a_recording_of_another_plan_naming_the_fields(
        live: Live, tmp_path: Path) -> None:
    root = tmp_path / "rec"
    record(live, "orders", root)
    with pytest.raises(RecordingMismatch) as caught:
        replay(live, "orders", root, tmp_path / "replay", limits=Limits(max_pages=3))
    assert caught.value.exit_code == 4
    assert "plan.limits.max_pages" in caught.value.message


def test_replay_of_a_missing_recording_is_a_precondition(live: Live, tmp_path: Path) -> None:
    record(live, "orders", tmp_path / "rec")
    other = Window.parse("2026-02-03T00:00:00Z", "2026-02-04T00:00:00Z")
    with pytest.raises(RecordingNotFound) as caught:
        replay(live, "orders", tmp_path / "rec", tmp_path / "replay", window=other)
    assert caught.value.exit_code == 3 and caught.value.field == "--replay"


def test_recording_folder_itself_replays(live: Live, tmp_path: Path) -> None:
    root = tmp_path / "rec"
    recorded = record(live, "metrics", root)
    replayed = replay(live, "metrics", recording_of(root), tmp_path / "replay")
    assert replayed.content_hash == recorded.content_hash


def test_recording_defaults_on_in_dev_only(live: Live) -> None:
    spec = live.resolve("orders").spec
    assert recording_enabled(spec, "dev") and not recording_enabled(spec, "staging")
    assert not recording_enabled(spec, "prod") and recording_enabled(spec, "prod", True)
    assert not recording_enabled(spec, "dev", False)
    on = live.add_variant("orders", "recorded", {"recording": {"enabled": False}})
    assert not recording_enabled(live.resolve("orders", on).spec, "dev")
    assert live.resolve("orders", on).hash != live.resolve("orders").hash


ECHO_SECRET = "echo-LEAK-5e5e5e"
_ECHO_CALLS: list[str] = []


def _echoing_upstream(handler) -> None:
    """An upstream that quotes the credential back everywhere: a 503 body first, then a
    page whose record, Link header and content type all carry it."""
    if not _ECHO_CALLS:
        _ECHO_CALLS.append(handler.path)
        reply(handler, 503, f'{{"error": "key {ECHO_SECRET} overloaded"}}'.encode())
        return
    body = json.dumps([{"id": "a1", "ts": "2026-02-01T01:00:00Z",
                        "note": f"the key was {ECHO_SECRET}"}]).encode()
    reply(handler, 200, body, {"Link": f'</events?k={ECHO_SECRET}&n=2>; rel="prev"',
                               "Content-Type": f"application/json; key={ECHO_SECRET}",
                               "Set-Cookie": f"session={ECHO_SECRET}"})


def test_bodies_headers_and_urls_echoing_the_credential_are_recorded_scrubbed(
        tmp_path: Path) -> None:
    with serve(_echoing_upstream) as srv:
        _ECHO_CALLS.clear()
        resolved = make_profile(f"http://{API_HOST}:{srv.port}", cidrs=["127.0.0.0/8"],
                                ports=[srv.port],
                                auth={"mode": "apiKeyQuery", "queryParam": "k",
                                      "secretRef": {"name": "api", "key": "token"}})
        secrets = SecretResolver([MappingSecretProvider({"api/token": ECHO_SECRET})])
        root = tmp_path / "rec"
        result = fetch_window(
            resolved, DAY, build_plan(resolved, DAY), target=WindowTarget.at(str(tmp_path)),
            network=NetworkOptions("dev", secrets, recording=RecordTo(Storage.parse(str(root)))),
            seams=Seams(sleep=RecordingSleep(),
                        resolver=FakeResolver({API_HOST: ["127.0.0.1"]})))
    assert result.retries == 1 and result.recorded is not None
    blob = every_recorded_byte(root)
    assert ECHO_SECRET.encode() not in blob and quote(ECHO_SECRET).encode() not in blob
    assert b"Set-Cookie" not in blob and b"session=" not in blob
    assert b"[REDACTED]" in blob  # scrubbed, not dropped


def _token_pages(handler) -> None:
    """Link pagination whose cursor parameter is called `token` (a credential-like name),
    with the total in a header of the upstream's own naming."""
    token = dict(parse_qsl(handler.path.partition("?")[2])).get("token", "p1")
    number = int(token[1:])
    body = json.dumps([{"id": f"r{number}", "ts": f"2026-02-01T0{number}:00:00Z"}]).encode()
    rel = f'</events?token=p{number + 1}>; rel="next"' if number < 3 else (
        '</events?token=p1>; rel="first"')  # an explicit end, as GitHub sends
    reply(handler, 200, body, {"Link": rel, "X-Result-Total": "3", "X-Request-Id": token})


def _link_profile(port: int) -> ResolvedProfile:
    base = make_profile(f"http://{API_HOST}:{port}", cidrs=["127.0.0.0/8"], ports=[port])
    doc = copy.deepcopy(base.document)
    doc["spec"]["pagination"] = {"mode": "link", "pageSize": 1, "limitParam": "per_page",
                                 "totalHeader": "X-Result-Total"}
    profile = ConnectorProfile.model_validate(doc)
    return ResolvedProfile(ref_of(profile), profile, doc, "sha256:token-test", "t.yaml")


def test_an_upstream_cursor_named_token_and_its_total_header_replay(
        tmp_path: Path, trap: NetworkTrap) -> None:
    with serve(_token_pages) as srv:
        resolved = _link_profile(srv.port)
        plan = build_plan(resolved, DAY)
        recorded = fetch_window(
            resolved, DAY, plan, target=WindowTarget.at(str(tmp_path / "live")),
            network=NetworkOptions("dev", recording=RecordTo(Storage.parse(str(tmp_path)))),
            seams=Seams(resolver=FakeResolver({API_HOST: ["127.0.0.1"]})))
    assert recorded.pages == 3
    lines = [json.loads(line) for line in
             (recording_of(tmp_path) / "responses.jsonl").read_text().splitlines()]
    assert [r["request"]["url"].partition("?")[2] for r in lines] == [
        "", "token=p2", "token=p3"]  # the upstream's cursor, kept as sent
    assert all(r["headers"]["x-result-total"] == "3" for r in lines)  # the profile reads it
    assert all("x-request-id" not in r["headers"] for r in lines)  # nothing reads this one
    trap.armed = True
    replayed = fetch_window(resolved, DAY, plan, target=WindowTarget.at(str(tmp_path / "r")),
                            network=NetworkOptions("dev", recording=ReplayFrom(str(tmp_path))))
    assert replayed.pages == 3 and replayed.content_hash == recorded.content_hash
