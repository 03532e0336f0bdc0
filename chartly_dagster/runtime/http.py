"""The one factory for HTTP clients: every request the product makes goes through here.

`build_client` wires the egress guard into httpcore's network backend (so each connection,
redirect hop, retry and pooled reconnect is checked on the IP it connects to), ignores
environment proxies and netrc, and never turns TLS verification off. `GuardedClient.get`
follows redirects itself under the profile's policy, applies auth only to the profile's
own origin, caps decoded bytes while streaming and enforces one deadline per request.
httpx exceptions never get out: `_mapped_errors` turns each into one of ours.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import certifi
import httpcore
import httpx

from ..core.catalog import ResolvedProfile
from ..core.hostnames import canonical_ip_literal, normalize_hostname
from ..core.profile import FORBIDDEN_HEADERS, Transport
from .decoding import ACCEPT_ENCODING, BodyDecoder
from .egress import EgressGuard, EnvPolicy, GuardedNetworkBackend, Resolver, default_port
from .errors import (
    ConnectFailed,
    ConnectionLost,
    DeadlineExceeded,
    EgressRefused,
    Reason,
    SecretNotFound,
    TransportFailure,
    UpstreamTimeout,
)
from .redact import Redactor, install_log_redaction
from .secrets import ResolvedAuth, SecretResolver

__all__ = ["GuardedClient", "GuardedResponse", "build_client"]

USER_AGENT = "chartly-dagster/0.1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The client decodes bodies itself (to bound decoded bytes), so it owns Accept-Encoding.
_CALLER_FORBIDDEN_HEADERS = FORBIDDEN_HEADERS | {"accept-encoding", "proxy-connection"}
_LOCATION = "chartly.location"
#: an error body is scrubbed over this many characters, then cut to `EXCERPT_CHARS`, so a
#: secret straddling the cut is scrubbed whole before any of it could show
_EXCERPT_SCAN = 4096
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class GuardedResponse:
    """A fully read response; `url` and `redirects` are scrubbed of credentials. The body is
    the upstream's raw data (it may echo anything back), so it stays out of `repr`."""

    status_code: int
    headers: httpx.Headers
    content: bytes = field(repr=False)
    url: str
    redirects: tuple[str, ...] = ()
    redactor: Redactor = field(default_factory=Redactor, repr=False, compare=False)

    def excerpt(self, limit: int = EXCERPT_CHARS) -> str:
        """The start of the body as one line, secrets scrubbed, at most `limit` characters:
        what the upstream said about a rejected request, fit for an error message."""
        text = self.content[:4 * _EXCERPT_SCAN].decode("utf-8", errors="replace")
        # Scrub before cutting to `limit`: a secret starting inside the excerpt lies wholly
        # inside the scanned text, so it is replaced whole, never shown in part.
        scrubbed = self.redactor.scrub(text[:_EXCERPT_SCAN]).lstrip()
        line = " ".join("".join(c if c.isprintable() else " " for c in scrubbed[:limit + 1])
                        .split())
        if len(scrubbed) > limit + 1 or len(line) > limit:
            return line[:limit - 1] + "…"
        return line


class _GuardedTransport(httpx.HTTPTransport):
    """httpx 0.28 has no public way in for a network backend, so the pool is rebuilt here."""

    def __init__(self, backend: GuardedNetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=10,
                              keepalive_expiry=5.0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, http1=True, http2=False, retries=0,
            network_backend=backend)
        self.backend = backend


def _ssl_context(verify: ssl.SSLContext | str | bool | None) -> ssl.SSLContext:
    """A verifying context: certifi roots, a CA bundle path, or a caller's verifying context."""
    if verify is False or (isinstance(verify, ssl.SSLContext) and (
            verify.verify_mode != ssl.CERT_REQUIRED or not verify.check_hostname)):
        raise EgressRefused(Reason.TLS_VERIFICATION_REQUIRED,
                            "TLS certificate and hostname verification cannot be turned off")
    if isinstance(verify, ssl.SSLContext):
        return verify
    cafile = verify if isinstance(verify, str) else certifi.where()
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL the guard has checked: a name or an allowed address."""
    ip = canonical_ip_literal(url.host)
    return url.scheme, str(ip) if ip else normalize_hostname(url.host), default_port(url)


class GuardedClient:
    """The only HTTP client: one profile's egress policy, auth and limits around httpx."""

    def __init__(self, client: httpx.Client, transport: _GuardedTransport, guard: EgressGuard,
                 transport_spec: Transport, auth: ResolvedAuth, base_url: httpx.URL,
                 max_redirects: int, allow_cross_origin: bool, redactor: Redactor) -> None:
        self._client = client
        self._transport = transport
        self.guard = guard
        self._spec = transport_spec
        self._auth = auth
        self._base_origin = _origin(base_url)
        self._max_redirects = max_redirects
        self._allow_cross_origin = allow_cross_origin
        self.redactor = redactor

    @property
    def backend(self) -> GuardedNetworkBackend:
        """The network backend every connection goes through (the test seam)."""
        return self._transport.backend

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(self, url: str, params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None) -> GuardedResponse:
        """GET an absolute URL under the egress policy; any status code is returned.

        Raises only `ChartlyError`s: `EgressRefused`, `ResponseTooLarge`,
        `MalformedResponse` (a body that does not decode) and, for transport failures, a
        `TransportFailure` subclass (`ConnectFailed`, `ConnectionLost`, `UpstreamTimeout`,
        `DeadlineExceeded`) with credentials scrubbed from its message.
        """
        deadline = time.monotonic() + self._spec.deadline_ms / 1000
        extra = self._check_headers(headers or {})
        target = self.guard.check_url(url)
        if params:
            target = target.copy_merge_params(dict(params))
        visited: set[str] = set()
        hops: list[str] = []
        while True:
            target = self._without_credentials(target)
            key = str(target.copy_with(fragment=None))
            if key in visited:
                raise EgressRefused(Reason.REDIRECT_LOOP,
                                    f"redirect loop back to {self.redactor.scrub_url(target)}")
            visited.add(key)
            response = self._send(target, extra, deadline)
            location = response.extensions.get(_LOCATION)
            if location is None:
                where = self.redactor.scrub_url(target)
                content = self._read_body(response, where, deadline)
                return GuardedResponse(response.status_code, response.headers, content,
                                       where, tuple(hops), self.redactor)
            response.close()
            hops.append(self.redactor.scrub_url(target))
            if len(hops) > self._max_redirects:
                raise EgressRefused(Reason.TOO_MANY_REDIRECTS,
                                    f"more than {self._max_redirects} redirects")
            target = self._redirect_target(target, location)

    def _without_credentials(self, url: httpx.URL) -> httpx.URL:
        """Drop the auth query parameter and any parameter echoing a secret (a redirect may
        carry one); `_send` adds the credential back for the profile's own origin only."""
        secrets = self._auth.values()
        for name, value in url.params.multi_items():
            if name == self._auth.query_param or value in secrets:
                url = url.copy_remove_param(name)
        return url

    def _check_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            lower = name.lower()
            if (lower in _CALLER_FORBIDDEN_HEADERS or lower.startswith("proxy-")
                    or lower in self._auth.header_names()):
                raise EgressRefused(Reason.HEADER_NOT_ALLOWED,
                                    f"header {name!r} may not be set by the caller")
            if any(c in value for c in "\r\n\x00") or any(c in name for c in "\r\n\x00:"):
                raise EgressRefused(Reason.HEADER_NOT_ALLOWED,
                                    f"header {name!r} holds a control character")
        return dict(headers)

    def _redirect_target(self, current: httpx.URL, location: str) -> httpx.URL:
        try:
            parsed = httpx.URL(location)
            target = parsed if parsed.scheme else current.join(parsed)
        except (httpx.InvalidURL, ValueError):
            raise EgressRefused(Reason.INVALID_URL, "redirect Location does not parse") from None
        if current.scheme == "https" and target.scheme == "http":
            raise EgressRefused(Reason.REDIRECT_DOWNGRADE, "redirect from https to http")
        target = self.guard.check_url(target)
        if _origin(target) != _origin(current) and not self._allow_cross_origin:
            raise EgressRefused(Reason.CROSS_ORIGIN_REDIRECT,
                                f"redirect to another origin ({target.scheme}://{target.host}:"
                                f"{_origin(target)[2]}) and egressPolicy."
                                "allowCrossOriginRedirects is false")
        return target

    def _timeout(self, deadline: float) -> httpx.Timeout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"request ran past transport.deadlineMs "
                                   f"({self._spec.deadline_ms} ms)")
        connect = min(self._spec.connect_timeout_ms / 1000, remaining)
        read = min(self._spec.timeout_ms / 1000, remaining)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _send(self, target: httpx.URL, extra: dict[str, str],
              deadline: float) -> httpx.Response:
        headers = dict(extra)
        where = self.redactor.scrub_url(target)
        if _origin(target) == self._base_origin:
            # Credentials only ever go to the profile's own origin, never across a redirect.
            headers.update(self._auth.headers())
            target = target.copy_merge_params(self._auth.params())
        request = self._client.build_request("GET", target, headers=headers,
                                             timeout=self._timeout(deadline))
        with self._mapped_errors(where, deadline):
            return self._client.send(request, stream=True, follow_redirects=False)

    def _read_body(self, response: httpx.Response, where: str, deadline: float) -> bytes:
        try:
            decoder = BodyDecoder(response.headers.get("content-encoding"),
                                  self._spec.max_payload_bytes)
            decoder.check_declared_length(response.headers.get("content-length"))
            body = bytearray()
            with self._mapped_errors(where, deadline):
                for chunk in response.iter_raw():
                    body += decoder.decode(chunk)
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded(f"response body ran past transport.deadlineMs "
                                               f"({self._spec.deadline_ms} ms)")
            decoder.finish()
            return bytes(body)
        finally:
            response.close()

    @contextlib.contextmanager
    def _mapped_errors(self, where: str, deadline: float) -> Iterator[None]:
        """The one place httpx's exceptions become ours (as httpx maps httpcore's): the class
        says what failed and that it is transient; the message keeps the scrubbed detail."""
        try:
            yield
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.TimeoutException) and time.monotonic() >= deadline - 0.005:
                raise DeadlineExceeded(f"request to {where} ran past transport.deadlineMs "
                                       f"({self._spec.deadline_ms} ms)") from None
            ours, label = next((c, label) for kind, c, label in _TRANSPORT_ERRORS
                               if isinstance(exc, kind))
            detail = self.redactor.scrub(str(exc) or type(exc).__name__)
            # `from None`: the httpx exception's request and args hold the unscrubbed URL.
            raise ours(f"{label} ({type(exc).__name__}) on {where}: {detail}") from None


#: httpx's transport failures to ours, most specific first (ConnectError is a NetworkError)
_TRANSPORT_ERRORS: tuple[tuple[type[httpx.TransportError], type[TransportFailure], str], ...] = (
    (httpx.TimeoutException, UpstreamTimeout, "timeout"),
    (httpx.ConnectError, ConnectFailed, "network error"),
    (httpx.NetworkError, ConnectionLost, "network error"),
    (httpx.RemoteProtocolError, ConnectionLost, "network error"),
    (httpx.TransportError, TransportFailure, "network error"),
)


def _take_location(response: httpx.Response) -> None:
    """Move Location out of httpx's sight: its redirect builder raises on malformed ones
    (`http:127.0.0.1/x`, `http://0177.0.0.1/`) and fixes up others; we judge them ourselves."""
    if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
        response.extensions = {**response.extensions,
                               _LOCATION: response.headers["location"]}
        del response.headers["location"]


def build_client(resolved: ResolvedProfile, *, env: str, secrets: SecretResolver | None = None,
                 env_policy: EnvPolicy | None = None, resolver: Resolver | None = None,
                 verify: ssl.SSLContext | str | None = None) -> GuardedClient:
    """Build the guarded client for one resolved profile in `env`.

    Fails before any network use when the env does not permit the profile's CIDRs or
    scheme, TLS verification would be off, or a referenced secret is missing.
    """
    spec = resolved.spec
    policy = env_policy or EnvPolicy()
    egress = spec.egress_policy
    guard = EgressGuard(
        dns_allowlist=tuple(egress.dns_allowlist),
        allowed_ports=frozenset(egress.allowed_ports or [spec.transport.port]),
        allowed_schemes=policy.schemes_for(env),
        allowed_networks=policy.networks_for(env, egress.allowed_cidrs),
        env_networks=policy.env_networks(),
    )
    base_url = guard.check_url(spec.transport.base_url)
    context = _ssl_context(verify)
    if spec.auth.mode == "none":
        auth = ResolvedAuth("none")
    elif secrets is None:
        refs = ", ".join(str(r) for r in spec.auth.secret_refs())
        raise SecretNotFound(f"auth.mode {spec.auth.mode!r} needs {refs} but no secret "
                             "resolver was configured", field="secretRef")
    else:
        auth = secrets.resolve_auth(spec.auth)
    if secrets is not None:
        # The one place log redaction is installed: every client's callers (CLI, Dagster,
        # scripts) get scrubbed logs, since httpx logs each request URL (and an apiKeyQuery
        # credential with it) at INFO.
        install_log_redaction(secrets.redactor)
    redactor = secrets.redactor if secrets is not None else Redactor()
    transport = _GuardedTransport(GuardedNetworkBackend(guard, resolver), context)
    default_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING,
                       **spec.request.headers}
    client = httpx.Client(transport=transport, trust_env=False, follow_redirects=False,
                          headers=default_headers,
                          event_hooks={"response": [_take_location]})
    return GuardedClient(client, transport, guard, policy.capped(spec.transport), auth, base_url,
                         egress.max_redirects, egress.allow_cross_origin_redirects, redactor)
