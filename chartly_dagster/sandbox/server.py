"""The sandbox HTTP server: auth, request log, fault injection, and the `run_sandbox` handle.

A real socket server (ThreadingHTTPServer, HTTP/1.1 keep-alive, Content-Length always set)
rather than a mocked transport, so clients under test exercise their real connection
handling: resets, truncation, redirects and slow bodies happen on the wire.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from .config import SandboxAuth, SandboxConfig
from .data import ENDPOINTS, to_epoch_seconds
from .endpoints import ROUTES, BadRequest, PageRequest, Reply, error_body
from .faults import FAULT_SPEC_SYNTAX, FAULT_SUMMARIES, HEALTH_PATH, ME_PATH, Fault, FaultPlan

REDACTED = "[redacted]"
_STATUS_CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
                 404: "not_found", 405: "method_not_allowed", 429: "rate_limited",
                 500: "internal", 502: "unavailable", 503: "unavailable", 504: "unavailable"}
_MALFORMED_BODY = b'{"data": {"items": [{\'id\': evt_1, "amount": NaN,}]'

LoggedRequest = tuple[str, str, dict[str, str]]
INDEX_PATH = "/"


def endpoint_catalog() -> list[dict[str, str]]:
    """Every paginated endpoint and how it paginates, read off the route table.

    The pagination style is the handler's docstring (after its "`/path`: " prefix), so a
    new route documents itself here by being written the way the others are.
    """
    rows = []
    for path, handler in ROUTES.items():
        summary = " ".join((handler.__doc__ or "").split("\n\n")[0].split())
        row = {"path": path, "pagination": summary.removeprefix(f"`{path}`:").strip()}
        shape = ENDPOINTS.get(path)
        if shape is not None:
            row |= {"id_field": shape.id_key, "time_field": shape.time_key,
                    "time_format": shape.time_style}
        rows.append(row)
    return rows


def sandbox_index() -> dict[str, Any]:
    """What `GET /` answers: the endpoints, the fault kinds and how to inject them."""
    return {
        "endpoints": endpoint_catalog(),
        "faults": [{"kind": kind, "effect": effect}
                   for kind, effect in sorted(FAULT_SUMMARIES.items())],
        "fault_syntax": f"chartly-tool sandbox serve --fault {FAULT_SPEC_SYNTAX}",
        "health": HEALTH_PATH,
    }


class _SandboxHTTPServer(ThreadingHTTPServer):
    """Holds the live config plus the request log and per-endpoint request counters."""

    def __init__(self, address: tuple[str, int], config: SandboxConfig) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.config = config
        self.lock = threading.Lock()
        self.log: list[LoggedRequest] = []
        self.times: list[tuple[str, float]] = []
        self.counts: Counter[str] = Counter()
        self.connections: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response (caps, timeouts, refused redirects) are routine
        # in the tests; anything else is still printed.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the bind address, which can stall
        # on a machine without reverse DNS; the sandbox never needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def record(self, method: str, path: str, query: dict[str, str]) -> int:
        """Log a request (credential redacted) and return its ordinal for its path."""
        secret_params = self.config.query_credential_params() & query.keys()
        if secret_params:
            query = {**query, **dict.fromkeys(secret_params, REDACTED)}
        with self.lock:
            self.log.append((method, path, query))
            self.times.append((path, time.monotonic()))
            self.counts[path] += 1
            return self.counts[path]

    def close_connections(self) -> None:
        """Drop keep-alive connections so a stopped sandbox stops answering at once."""
        with self.lock:
            open_sockets = list(self.connections)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chartly-sandbox/1"
    timeout = 120  # idle keep-alive connections end instead of pinning a thread forever
    server: _SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # a reset fault already closed the socket

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines carry query strings, which may carry an API key."""

    # -- plumbing --------------------------------------------------------------------

    def _head(self, status: int, length: int, headers: list[tuple[str, str]],
              content_type: str = "application/json") -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
                 f"Content-Length: {length}", f"Server: {self.server_version}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
              ) -> None:
        self.wfile.write(self._head(status, len(body), headers or []) + body)

    def _error(self, status: int, message: str,
               headers: list[tuple[str, str]] | None = None) -> None:
        code = _STATUS_CODES.get(status, "unavailable" if status >= 500 else "invalid_argument")
        self._send(status, error_body(code, message), headers)

    def _not_allowed(self) -> None:
        body = error_body("method_not_allowed", f"method {self.command} is not allowed")
        if self.command == "HEAD":  # a HEAD response announces the body but never sends it
            self.wfile.write(self._head(405, len(body), [("Allow", "GET")]))
        else:
            self._send(405, body, [("Allow", "GET")])

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_allowed

    # -- requests --------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        ordinal = self.server.record("GET", path, query)
        config = self.server.config
        if path == HEALTH_PATH:
            self._send(200, b'{"ok":true}')
            return
        if path == INDEX_PATH:
            self._send(200, orjson.dumps(sandbox_index(), option=orjson.OPT_SORT_KEYS))
            return
        if path not in ROUTES and path != ME_PATH:
            self._error(404, f"no endpoint at {path}")
            return
        auth = config.auth_for(path)
        if not self._authenticated(auth, query):
            self._error(401, "missing or invalid credentials", _challenge(auth))
            return
        if path in config.forbidden:
            self._error(403, f"the credential may not read {path}")
            return
        fault = config.faults.take(path, ordinal, query)
        if fault is not None and fault.kind in ("status", "redirect"):
            self._answer_instead(fault)
            return
        if fault is not None and fault.kind == "slow" and fault.phase == "headers":
            time.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.kind == "hold":
            fault.released.wait()
        if path == ME_PATH:
            reply = Reply(200, b'{"ok":true}')
        else:
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            request = PageRequest(path, query, host, config.stream(path), fault)
            try:
                reply = ROUTES[path](request)
            except BadRequest as exc:
                self._error(400, str(exc))
                return
        self._deliver(reply, fault)

    def _authenticated(self, auth: SandboxAuth | None, query: dict[str, str]) -> bool:
        if auth is None:
            return True
        mode = auth[0]
        if mode == "bearer":
            given = self.headers.get("Authorization", "")
            return given[:7].lower() == "bearer " and _same(given[7:].strip(), auth[1])
        if mode == "api_key_header":
            return _same(self.headers.get(auth[1], ""), auth[2])
        if mode == "api_key_query":
            return _same(query.get(auth[1], ""), auth[2])
        given = self.headers.get("Authorization", "")
        if given[:6].lower() != "basic ":
            return False
        expected = base64.b64encode(f"{auth[1]}:{auth[2]}".encode()).decode()
        return _same(given[6:].strip(), expected)

    def _answer_instead(self, fault: Fault) -> None:
        """A status or redirect fault replaces the page entirely."""
        assert fault.status is not None  # set by Fault.__post_init__
        if fault.kind == "redirect":
            self._send(fault.status, b"", [("Location", fault.location)])
            return
        headers = []
        if fault.retry_after_s is not None:
            value = (str(fault.retry_after_s) if fault.retry_after_format == "seconds"
                     else formatdate(time.time() + fault.retry_after_s, usegmt=True))
            headers.append(("Retry-After", value))
        self._error(fault.status, f"injected fault: status {fault.status}", headers)

    def _deliver(self, reply: Reply, fault: Fault | None) -> None:
        """Send `reply`, bent by a body or transport fault."""
        body = reply.body
        if fault is not None and fault.kind == "malformed":
            body = _MALFORMED_BODY
        elif fault is not None and fault.kind == "oversized":
            body = _pad(body, fault.pad_bytes)
        elif fault is not None and fault.kind == "truncated":
            body = body[:int(len(body) * fault.cut_fraction)]
        head = self._head(reply.status, len(body), reply.headers)
        if fault is not None and fault.kind == "reset":
            self.wfile.write(head + body[:int(len(body) * fault.cut_fraction)])
            # SO_LINGER 0: closing sends RST instead of FIN, like a crashed upstream. The
            # fd only really closes once rfile (a makefile() of it) is closed too, and it
            # must close here, before the server's usual shutdown(SHUT_WR) sends a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
            self.close_connection = True
        elif fault is not None and fault.kind == "slow" and fault.phase == "body":
            cut = len(body) // 2
            self.wfile.write(head + body[:cut])
            time.sleep(fault.delay_ms / 1000)
            self.wfile.write(body[cut:])
        else:
            self.wfile.write(head + body)


def _challenge(auth: SandboxAuth | None) -> list[tuple[str, str]]:
    if auth is not None and auth[0] in ("bearer", "basic"):
        return [("WWW-Authenticate", f'{auth[0].capitalize()} realm="sandbox"')]
    return []


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _pad(body: bytes, size: int) -> bytes:
    """Grow a body by `size` bytes of padding field, keeping it valid JSON."""
    padding = b'"padding":"' + b"x" * size + b'"'
    if body.startswith(b"{"):
        return b"{" + padding + b"," + body[1:]
    if body.startswith(b"[{"):
        return b"[{" + padding + b"," + body[2:]
    return body[:1] + b" " * size + body[1:]  # empty array: whitespace is the only padding


class Sandbox:
    """A running sandbox: where it listens, its live config, and what it was asked."""

    def __init__(self, server: _SandboxHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.host: str = host
        self.port: int = port
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def config(self) -> SandboxConfig:
        """The live config; changes apply to the next request."""
        return self._server.config

    @property
    def faults(self) -> FaultPlan:
        """The live fault plan (`add`, `clear`, `pending`)."""
        return self._server.config.faults

    @property
    def request_log(self) -> list[LoggedRequest]:
        """(method, path, query) of every request so far, oldest first; API keys redacted."""
        with self._server.lock:
            return list(self._server.log)

    def request_count(self, endpoint: str | None = None) -> int:
        """Requests to `endpoint` (a path), or to any path, since start or `clear_requests`."""
        with self._server.lock:
            counts = self._server.counts
            return counts[endpoint] if endpoint is not None else sum(counts.values())

    def request_times(self, endpoint: str | None = None) -> list[float]:
        """`time.monotonic()` arrival times of requests to `endpoint` (or all), for rate checks."""
        with self._server.lock:
            return [t for path, t in self._server.times if endpoint in (None, path)]

    def clear_requests(self) -> None:
        """Empty the log and restart the per-endpoint ordinals faults are matched against."""
        with self._server.lock:
            self._server.log.clear()
            self._server.times.clear()
            self._server.counts.clear()

    def url(self, path: str, **params: str | int) -> str:
        """Absolute URL of `path` with query `params`, for tests that build requests."""
        return f"{self.base_url}{path}" + (f"?{urlencode(params)}" if params else "")

    def ground_truth(self, endpoint: str, start: datetime | str | int,
                     end: datetime | str | int) -> list[dict[str, Any]]:
        """The exact records `endpoint` holds with times in [start, end), in serving order.

        Bounds are aware datetimes, RFC3339 text or epoch seconds for every endpoint; for
        /v1/invoices pass day boundaries (its end_date is inclusive on the wire).
        """
        stream = self.config.stream(endpoint)
        lo, hi = stream.index_range(to_epoch_seconds(start), to_epoch_seconds(end))
        return stream.records(lo, hi)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises KeyboardInterrupt out of here)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def close(self) -> None:
        """Stop serving and drop open connections; idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._server.close_connections()


def check_bind_host(host: str, allow_non_loopback: bool) -> None:
    """Refuse to expose the sandbox beyond this machine unless asked to explicitly."""
    if allow_non_loopback:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"sandbox host {host!r} is not a loopback address; it binds "
                         "127.0.0.1 or ::1 unless non-loopback binding is explicitly allowed")


def start_sandbox(config: SandboxConfig | None = None, *, host: str = "127.0.0.1",
                  port: int = 0, allow_non_loopback: bool = False) -> Sandbox:
    """Start a sandbox on a background thread (port 0: an ephemeral port); call `close()`."""
    check_bind_host(host, allow_non_loopback)
    server = _SandboxHTTPServer((host, port), config or SandboxConfig())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"sandbox:{server.server_address[1]}", daemon=True)
    thread.start()
    return Sandbox(server, thread)


@contextmanager
def run_sandbox(config: SandboxConfig | None = None, *, host: str = "127.0.0.1",
                port: int = 0) -> Iterator[Sandbox]:
    """`with run_sandbox() as sb:` a sandbox on an ephemeral loopback port for the block."""
    sandbox = start_sandbox(config, host=host, port=port)
    try:
        yield sandbox
    finally:
        sandbox.close()
