"""Helpers for the egress, secrets and HTTP client tests: profiles, seams, loopback servers.

Every server here binds 127.0.0.1 on an ephemeral port; every hostile address is handed
to the guard through a fake resolver and never connected to.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore

from chartly_dagster.core.catalog import ResolvedProfile, ref_of
from chartly_dagster.core.profile import ConnectorProfile
from chartly_dagster.runtime.http import GuardedClient

API_HOST = "api.example.test"


def make_profile(base_url: str = f"https://{API_HOST}", *,
                 allowlist: Sequence[str] = (API_HOST,), cidrs: Sequence[str] = (),
                 ports: Sequence[int] = (), auth: dict[str, Any] | None = None,
                 cross_origin: bool = False, max_redirects: int = 5,
                 max_payload_bytes: int = 1024 * 1024, deadline_ms: int = 5_000,
                 timeout_ms: int = 2_000, envs: Sequence[str] = ("dev", "staging", "prod"),
                 headers: dict[str, str] | None = None) -> ResolvedProfile:
    """A valid resolved profile with only the transport/egress/auth parts varied."""
    doc = {
        "apiVersion": "chartly.io/v1alpha1",
        "kind": "Profile",
        "metadata": {"kind": "connector", "name": "events", "namespace": "acme/core",
                     "version": "1.0.0"},
        "spec": {
            "envs": list(envs),
            "transport": {"baseUrl": base_url, "timeoutMs": timeout_ms,
                          "connectTimeoutMs": 1_000, "deadlineMs": deadline_ms,
                          "maxPayloadBytes": max_payload_bytes},
            "egressPolicy": {"dnsAllowlist": list(allowlist), "allowedCidrs": list(cidrs),
                             "allowedPorts": list(ports),
                             "allowCrossOriginRedirects": cross_origin,
                             "maxRedirects": max_redirects},
            "auth": auth or {"mode": "none"},
            "request": {"path": "/events", "headers": headers or {}},
            "records": {"idField": "id", "timeField": "ts"},
            "pagination": {"mode": "none"},
            "rateLimit": {"maxRequestsPerMinute": 600},
            "partitions": {"start": "2026-01-01T00:00:00Z"},
        },
    }
    profile = ConnectorProfile.model_validate(doc)
    return ResolvedProfile(ref_of(profile), profile, doc, "sha256:test", "test.yaml")


@dataclass
class FakeResolver:
    """DNS from a table (or a function of the call number), recording every lookup."""

    answers: dict[str, Sequence[str] | Callable[[int], Sequence[str]]] = field(
        default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        entry = self.answers.get(host)
        if entry is None:
            raise OSError(f"no such host {host}")
        return entry(len(self.calls)) if callable(entry) else entry


class RecordingBackend(httpcore.NetworkBackend):
    """Wraps the real backend below the guard and records every socket it is asked for."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        self.connects.append((host, port))
        if host not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to non-loopback {host}")
        return self.inner.connect_tcp(host, port, timeout=timeout,
                                      local_address=local_address,
                                      socket_options=socket_options)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def record_connects(client: GuardedClient) -> RecordingBackend:
    """Insert a recorder on the connector seam of `client` (below the guard)."""
    recorder = RecordingBackend(client.backend.inner)
    client.backend.inner = recorder
    return recorder


Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LocalServer:
    port: int
    requests: list[dict[str, Any]]
    host: str = "127.0.0.1"


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    route: Handler
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "headers": dict(self.headers.items())})
        type(self).route(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""


@contextlib.contextmanager
def serve(route: Handler, *, tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    """A threaded HTTP(S) server on 127.0.0.1; `route(handler)` writes each response."""
    seen: list[dict[str, Any]] = []
    handler = type("H", (_Quiet,), {"route": staticmethod(route), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield LocalServer(server.server_address[1], seen)
    finally:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int = 200, body: bytes = b"{}",
          headers: dict[str, str] | None = None) -> None:
    """Write one complete response with Content-Length."""
    handler.send_response(status)
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body)),
                   **(headers or {})}
    for name, value in all_headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
