"""End to end against real servers on 127.0.0.1: CIDRs, redirects, rebinding, caps, auth.

Hostile targets (metadata, private space) appear only as resolver answers or Location
headers; the recorder on the connector seam proves they are never connected to.
"""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from pathlib import Path

import pytest

from chartly_dagster.runtime.errors import (
    ConnectFailed,
    DeadlineExceeded,
    EgressRefused,
    Reason,
    ResponseTooLarge,
)
from chartly_dagster.runtime.http import build_client
from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver
from tests.support.egress import (
    API_HOST,
    FakeResolver,
    make_profile,
    record_connects,
    reply,
    serve,
)
from tests.support.paths import REPO

LOOPBACK = ["127.0.0.0/8"]


def ok(handler) -> None:
    reply(handler, 200, b'{"ok": true}')


def test_loopback_is_reachable_in_dev_only_with_an_explicit_cidr() -> None:
    with serve(ok) as srv:
        base = f"http://localhost:{srv.port}"
        allowed = make_profile(base, allowlist=["localhost"], cidrs=[*LOOPBACK, "::1/128"])
        with build_client(allowed, env="dev") as client:  # the system resolver
            response = client.get(f"{base}/events")
        assert (response.status_code, response.content) == (200, b'{"ok": true}')

        resolver = FakeResolver({"localhost": ["127.0.0.1"]})
        with build_client(make_profile(base, allowlist=["localhost"]), env="dev",
                          resolver=resolver) as client:
            recorder = record_connects(client)
            with pytest.raises(EgressRefused) as info:
                client.get(f"{base}/events")
        assert info.value.category == "loopback" and recorder.connects == []
        assert len(srv.requests) == 1


def test_socket_goes_to_the_checked_ip_while_host_keeps_the_name() -> None:
    with serve(ok) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolver = FakeResolver({API_HOST: ["127.0.0.1"]})
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=resolver) as client:
            recorder = record_connects(client)
            client.get(f"{base}/a")
            client.get(f"{base}/b")  # pooled: no new connection, no new lookup
        assert recorder.connects == [("127.0.0.1", srv.port)]
        assert resolver.calls == [(API_HOST, srv.port)]
        assert srv.requests[0]["headers"]["Host"] == f"{API_HOST}:{srv.port}"


def test_dns_rebinding_between_connections_is_caught_on_the_reconnect() -> None:
    def close_each(handler) -> None:
        reply(handler, 200, b"{}", {"Connection": "close"})

    answers = {1: ["127.0.0.1"], 2: ["169.254.169.254"]}
    with serve(close_each) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolver = FakeResolver({API_HOST: lambda n: answers[n]})
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=resolver) as client:
            recorder = record_connects(client)
            assert client.get(f"{base}/first").status_code == 200
            with pytest.raises(EgressRefused) as info:
                client.get(f"{base}/second")
    assert info.value.category == "metadata"
    assert len(resolver.calls) == 2  # exactly one lookup per connection, never a second
    assert recorder.connects == [("127.0.0.1", srv.port)]


def test_rebinding_answer_is_never_looked_up_twice_within_one_connection() -> None:
    # A resolver that answers "safe" once and "metadata" afterwards: if the library looked
    # the name up again after our check, it would connect to the second answer.
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    with serve(ok) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolver = FakeResolver({API_HOST: lambda n: next(answers)})
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=resolver) as client:
            recorder = record_connects(client)
            assert client.get(f"{base}/").status_code == 200
    assert recorder.connects == [("127.0.0.1", srv.port)] and len(resolver.calls) == 1


@pytest.mark.parametrize(("location", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", Reason.IP_LITERAL_HOST),
    ("http://0177.0.0.1/", Reason.INVALID_URL),
    ("http://2130706433/", Reason.NUMERIC_HOST),
    ("file:///etc/passwd", Reason.SCHEME_NOT_ALLOWED),
    ("gopher://api.example.test/", Reason.SCHEME_NOT_ALLOWED),
    ("http://user:pw@api.example.test/", Reason.USERINFO_IN_URL),
    ("http://metadata.google.internal/", Reason.HOST_NOT_ALLOWLISTED),
    ("http://api.example.test:6379/", Reason.PORT_NOT_ALLOWED),
    ("http:127.0.0.1/x", Reason.INVALID_URL),
])
def test_redirect_to_a_refused_target_is_refused(location, reason) -> None:
    def redirect(handler) -> None:
        reply(handler, 302, b"", {"Location": location})

    with serve(redirect) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolver = FakeResolver({API_HOST: ["127.0.0.1"]})
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=resolver) as client:
            recorder = record_connects(client)
            with pytest.raises(EgressRefused) as info:
                client.get(f"{base}/start")
    assert info.value.reason == reason
    assert recorder.connects == [("127.0.0.1", srv.port)]


def test_redirect_to_an_allowlisted_name_in_private_space_is_refused_at_connect() -> None:
    def redirect(handler) -> None:
        reply(handler, 302, b"", {"Location": f"http://internal.example.test:{srv.port}/"})

    with serve(redirect) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolver = FakeResolver({API_HOST: ["127.0.0.1"], "internal.example.test": ["10.1.2.3"]})
        resolved = make_profile(base, cidrs=LOOPBACK, cross_origin=True,
                                allowlist=[API_HOST, "internal.example.test"])
        with build_client(resolved, env="dev", resolver=resolver) as client:
            recorder = record_connects(client)
            with pytest.raises(EgressRefused) as info:
                client.get(f"{base}/start")
    assert (info.value.reason, info.value.category) == (Reason.ADDRESS_REFUSED, "private")
    assert recorder.connects == [("127.0.0.1", srv.port)]
    assert resolver.calls[-1] == ("internal.example.test", srv.port)


def test_redirect_loops_and_chains_are_bounded() -> None:
    def route(handler) -> None:
        if handler.path.startswith("/loop"):
            nxt = "/loop-b" if handler.path == "/loop-a" else "/loop-a"
            reply(handler, 301, b"", {"Location": nxt})
        else:
            step = int(handler.path.rsplit("/", 1)[1])
            reply(handler, 307, b"", {"Location": f"/chain/{step + 1}"})

    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolver = FakeResolver({API_HOST: ["127.0.0.1"]})
        with build_client(make_profile(base, cidrs=LOOPBACK, max_redirects=3), env="dev",
                          resolver=resolver) as client:
            with pytest.raises(EgressRefused) as loop:
                client.get(f"{base}/loop-a")
            with pytest.raises(EgressRefused) as chain:
                client.get(f"{base}/chain/0")
    assert loop.value.reason == Reason.REDIRECT_LOOP
    assert chain.value.reason == Reason.TOO_MANY_REDIRECTS
    assert [r["path"] for r in srv.requests][-4:] == ["/chain/0", "/chain/1", "/chain/2",
                                                     "/chain/3"]


def test_same_origin_redirect_is_followed_with_auth() -> None:
    def route(handler) -> None:
        if handler.path.startswith("/old"):
            reply(handler, 308, b"", {"Location": "/new?page=2"})
        else:
            reply(handler, 200, b"[1]")

    secrets = SecretResolver([MappingSecretProvider({"api/token": "tok-123456"})])
    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolved = make_profile(base, cidrs=LOOPBACK, auth={
            "mode": "bearer", "secretRef": {"name": "api", "key": "token"}})
        with build_client(resolved, env="dev", secrets=secrets,
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            response = client.get(f"{base}/old")
    assert response.content == b"[1]" and response.url.endswith("/new?page=2")
    assert response.redirects == (f"{base}/old",)
    assert [r["headers"].get("Authorization") for r in srv.requests] == [
        "Bearer tok-123456"] * 2


@pytest.mark.parametrize("mode", ["bearer", "apiKeyHeader", "apiKeyQuery", "basic"])
def test_cross_origin_redirect_refused_by_default_and_stripped_of_auth_when_allowed(
        mode) -> None:
    auth = {"mode": mode, "secretRef": {"name": "api", "key": "token"}}
    auth |= {"apiKeyHeader": {"headerName": "X-Api-Token"},
             "apiKeyQuery": {"queryParam": "api_key"},
             "basic": {"usernameSecretRef": {"name": "api", "key": "user"}}}.get(mode, {})
    secrets = SecretResolver([MappingSecretProvider({"api/token": "s3cr3t-value",
                                                     "api/user": "robot"})])
    with serve(ok) as other:
        def redirect(handler) -> None:
            reply(handler, 302, b"", {
                "Location": f"http://{API_HOST}:{other.port}/landing?api_key=s3cr3t-value"})

        with serve(redirect) as srv:
            base = f"http://{API_HOST}:{srv.port}"
            resolver = FakeResolver({API_HOST: ["127.0.0.1"]})
            for allow in (False, True):
                resolved = make_profile(base, cidrs=LOOPBACK, auth=auth, cross_origin=allow,
                                        ports=[srv.port, other.port])
                with build_client(resolved, env="dev", secrets=secrets,
                                  resolver=resolver) as client:
                    if not allow:
                        with pytest.raises(EgressRefused) as info:
                            client.get(f"{base}/start")
                        assert info.value.reason == Reason.CROSS_ORIGIN_REDIRECT
                        assert other.requests == []
                    else:
                        response = client.get(f"{base}/start")
                        assert response.status_code == 200
                        assert "s3cr3t" not in response.url
    first = srv.requests[-1]
    carried = ("s3cr3t-value" in first["path"], "Authorization" in first["headers"],
               "X-Api-Token" in first["headers"])
    assert any(carried)  # the profile's own origin did get the credential
    (landed,) = other.requests
    assert landed["path"] == "/landing"
    assert not {"Authorization", "X-Api-Token", "Cookie"} & set(landed["headers"])


def test_statuses_are_returned_not_raised() -> None:
    def route(handler) -> None:
        status = int(handler.path.strip("/"))
        reply(handler, status, b'{"error": "x"}')

    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            codes = [client.get(f"{base}/{code}").status_code for code in (401, 404, 429, 503)]
    assert codes == [401, 404, 429, 503]


def test_transport_failures_are_mapped_to_our_classes() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://{API_HOST}:{port}"
    with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                      resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
        with pytest.raises(ConnectFailed) as info:
            client.get(f"{base}/")
    assert info.value.retryable and info.value.code == "unavailable"
    with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                      resolver=FakeResolver({})) as client:
        with pytest.raises(ConnectFailed, match="DNS lookup"):
            client.get(f"{base}/")


@pytest.mark.parametrize("shape", ["declared", "chunked", "gzip_bomb", "deflate_bomb"])
def test_body_over_the_cap_is_stopped_while_streaming(shape) -> None:
    cap = 64 * 1024
    big = b"0" * (8 * 1024 * 1024)

    def route(handler) -> None:
        if shape == "declared":
            reply(handler, 200, big[: cap + 1])
        elif shape == "chunked":
            handler.send_response(200)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for _ in range(64):
                chunk = b"x" * 4096
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.write(b"0\r\n\r\n")
        else:
            body = gzip.compress(big) if shape == "gzip_bomb" else zlib.compress(big)
            encoding = "gzip" if shape == "gzip_bomb" else "deflate"
            reply(handler, 200, body, {"Content-Encoding": encoding})

    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        with build_client(make_profile(base, cidrs=LOOPBACK, max_payload_bytes=cap),
                          env="dev", resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            with pytest.raises(ResponseTooLarge) as info:
                client.get(f"{base}/big")
    assert info.value.exit_code == 4 and info.value.reason == "response_too_large"


def test_compressed_body_under_the_cap_is_decoded() -> None:
    payload = b'{"items": [' + b"1," * 1000 + b"1]}"

    def route(handler) -> None:
        reply(handler, 200, gzip.compress(payload), {"Content-Encoding": "gzip"})

    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            assert client.get(f"{base}/").content == payload
    assert srv.requests[0]["headers"]["Accept-Encoding"] == "gzip, deflate"


def test_unadvertised_content_encoding_is_refused() -> None:
    def route(handler) -> None:
        reply(handler, 200, b"\x28\xb5\x2f\xfd", {"Content-Encoding": "zstd"})

    with serve(route) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            with pytest.raises(EgressRefused) as info:
                client.get(f"{base}/")
    assert info.value.reason == Reason.UNSUPPORTED_CONTENT_ENCODING


def test_overall_deadline_stops_a_slow_drip() -> None:
    def drip(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        for _ in range(100):
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    with serve(drip) as srv:
        base = f"http://{API_HOST}:{srv.port}"
        resolved = make_profile(base, cidrs=LOOPBACK, deadline_ms=400, timeout_ms=1_000)
        with build_client(resolved, env="dev",
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                client.get(f"{base}/")
    assert time.monotonic() - started < 1.5
    assert info.value.retryable and info.value.exit_code == 1  # transient, like a timeout


def test_environment_proxies_and_netrc_are_ignored(monkeypatch, tmp_path: Path) -> None:
    with serve(ok) as proxy, serve(ok) as srv:
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine {API_HOST} login u password netrc-pass\n")
        monkeypatch.setenv("NETRC", str(netrc))
        base = f"http://{API_HOST}:{srv.port}"
        with build_client(make_profile(base, cidrs=LOOPBACK), env="dev",
                          resolver=FakeResolver({API_HOST: ["127.0.0.1"]})) as client:
            client.get(f"{base}/")
    assert proxy.requests == []
    assert "Authorization" not in srv.requests[0]["headers"]


def test_the_backend_seam_is_where_we_put_it() -> None:
    """httpx/httpcore private attributes this relies on; fails loudly if they move."""
    with build_client(make_profile(), env="dev", resolver=FakeResolver({})) as client:
        pool = client._transport._pool
        assert pool._network_backend is client.backend
        assert client._client._transport is client._transport
        assert client._client._mounts == {}
        assert client._client._trust_env is False


def test_nothing_else_builds_an_http_client() -> None:
    root = REPO / "chartly_dagster"
    needles = ("httpx.Client(", "httpx.AsyncClient(", "HTTPTransport(", "ConnectionPool(",
               "httpx.get(", "httpx.stream(", "httpx.request(", "urllib.request",
               "http.client", "requests.")
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "http.py" and path.parent.name == "runtime":
            continue
        if path.parent.name == "sandbox":  # the local upstream serves, it does not fetch
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(root)}: {n}" for n in needles if n in text]
    assert offenders == []
