"""The one factory for HTTP clients: every request the product makes goes through here.

`build_client` wires the egress guard into httpcore's network backend (so each connection,
redirect hop, retry and pooled reconnect is checked on the IP it connects to), ignores
environment proxies and netrc, and never turns TLS verification off. `GuardedClient.get`
follows redirects itself under the profile's policy, applies auth only to the profile's
own origin, caps decoded bytes while streaming and enforces one deadline per request.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Self

import certifi
import httpcore
import httpx

from ..core.catalog import ResolvedProfile
from ..core.hostnames import normalize_hostname
from ..core.profile import FORBIDDEN_HEADERS, Transport
from .egress import EgressGuard, GuardedNetworkBackend, IPNetwork, Resolver, default_port
from .errors import DeadlineExceeded, EgressRefused, Reason, ResponseTooLarge, SecretNotFound
from .redact import Redactor, install_log_redaction
from .secrets import ResolvedAuth, SecretResolver

__all__ = ["EnvPolicy", "GuardedClient", "GuardedResponse", "build_client"]

USER_AGENT = "chartly-dagster/0.1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")
PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
# The client decodes bodies itself (to bound decoded bytes), so it owns Accept-Encoding.
_CALLER_FORBIDDEN_HEADERS = FORBIDDEN_HEADERS | {"accept-encoding", "proxy-connection"}
_LOCATION = "chartly.location"


def _default_env_cidrs() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({
        "dev": LOOPBACK_CIDRS + PRIVATE_CIDRS,
        "staging": PRIVATE_CIDRS,
        "prod": PRIVATE_CIDRS,
    })


@dataclass(frozen=True)
class EnvPolicy:
    """What each environment lets a profile open up: CIDRs into private space, plain http.

    A profile's `allowedCidrs` entry must sit inside one of its env's ranges; metadata
    addresses stay refused whatever is allowed (see `egress.HARD_DENY`).
    """

    allowable_cidrs: Mapping[str, tuple[str, ...]] = field(
        default_factory=_default_env_cidrs, hash=False)
    plaintext_http_envs: frozenset[str] = frozenset({"dev"})
    #: Deployment caps on the profile's `transport` timeouts (ms); a cap only ever lowers
    #: the profile's value, so a profile cannot wait longer than its env allows.
    max_timeout_ms: int | None = None
    max_connect_timeout_ms: int | None = None
    max_deadline_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_timeout_ms", "max_connect_timeout_ms", "max_deadline_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"EnvPolicy.{name} must be positive, got {value}")

    def capped(self, transport: Transport) -> Transport:
        """The profile's transport with each timeout lowered to its cap (never raised)."""
        caps = {"timeout_ms": self.max_timeout_ms,
                "connect_timeout_ms": self.max_connect_timeout_ms,
                "deadline_ms": self.max_deadline_ms}
        update = {name: min(getattr(transport, name), cap)
                  for name, cap in caps.items() if cap is not None}
        return transport.model_copy(update=update) if update else transport

    def networks_for(self, env: str, cidrs: list[str]) -> tuple[IPNetwork, ...]:
        """The profile's CIDRs as networks; refuses any the env does not permit."""
        allowable = [ipaddress.ip_network(c) for c in self.allowable_cidrs.get(env, ())]
        out = []
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr)
            if not any(net.version == a.version and net.subnet_of(a)  # type: ignore[arg-type]
                       for a in allowable):
                raise EgressRefused(Reason.CIDR_NOT_PERMITTED,
                                    f"egressPolicy.allowedCidrs entry {cidr} is not permitted "
                                    f"in env {env!r}", field="egressPolicy.allowedCidrs")
            out.append(net)
        return tuple(out)

    def schemes_for(self, env: str) -> frozenset[str]:
        return frozenset({"http", "https"} if env in self.plaintext_http_envs else {"https"})


@dataclass(frozen=True)
class GuardedResponse:
    """A fully read response; `url` and `redirects` are scrubbed of credentials."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str
    redirects: tuple[str, ...] = ()


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
    return url.scheme, normalize_hostname(url.host), default_port(url)


class _BoundedDecoder:
    """Decodes gzip/deflate with zlib's `max_length`, so a bomb never inflates past the cap."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._first = True
        self._zlib = None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)

    def decode(self, data: bytes, room: int) -> bytes:
        if self._zlib is None:
            out = data
        else:
            try:
                out = self._zlib.decompress(data, room + 1)
            except zlib.error:
                if not (self._first and self.encoding == "deflate"):
                    raise httpx.DecodingError(f"invalid {self.encoding} body") from None
                # Some servers send raw deflate without the zlib wrapper.
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self._zlib.decompress(data, room + 1)
        self._first = False
        if len(out) > room:
            raise ResponseTooLarge("response body exceeds transport.maxPayloadBytes "
                                   "(counted after decoding)")
        return out

    def flush(self, room: int) -> bytes:
        out = self._zlib.flush() if self._zlib is not None else b""
        if len(out) > room:
            raise ResponseTooLarge("response body exceeds transport.maxPayloadBytes "
                                   "(counted after decoding)")
        return out


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

        Raises `EgressRefused`, `ResponseTooLarge`, `DeadlineExceeded`; transport failures
        propagate as `httpx.TransportError` subclasses (credentials scrubbed).
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
                content = self._read_body(response, deadline)
                return GuardedResponse(response.status_code, response.headers, content,
                                       self.redactor.scrub_url(target), tuple(hops))
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
        if _origin(target) == self._base_origin:
            # Credentials only ever go to the profile's own origin, never across a redirect.
            headers.update(self._auth.headers())
            target = target.copy_merge_params(self._auth.params())
        request = self._client.build_request("GET", target, headers=headers,
                                             timeout=self._timeout(deadline))
        try:
            return self._client.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, deadline) from None

    def _read_body(self, response: httpx.Response, deadline: float) -> bytes:
        cap = self._spec.max_payload_bytes
        try:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
                raise EgressRefused(Reason.UNSUPPORTED_CONTENT_ENCODING,
                                    f"content-encoding {encoding!r} is not accepted")
            length = response.headers.get("content-length", "")
            if encoding in ("identity", "") and length.isdigit() and int(length) > cap:
                raise ResponseTooLarge(f"response declares {length} bytes, over "
                                       f"transport.maxPayloadBytes ({cap})")
            decoder = _BoundedDecoder(encoding)
            body = bytearray()
            for chunk in response.iter_raw():
                body += decoder.decode(chunk, cap - len(body))
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(f"response body ran past transport.deadlineMs "
                                           f"({self._spec.deadline_ms} ms)")
            body += decoder.flush(cap - len(body))
            return bytes(body)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, deadline) from None
        finally:
            response.close()

    def _transport_error(self, exc: httpx.TransportError,
                         deadline: float) -> httpx.TransportError | DeadlineExceeded:
        """The same error class with credentials scrubbed, or DeadlineExceeded if it was."""
        if isinstance(exc, httpx.TimeoutException) and time.monotonic() >= deadline - 0.005:
            return DeadlineExceeded(f"request ran past transport.deadlineMs "
                                    f"({self._spec.deadline_ms} ms)")
        message = self.redactor.scrub(str(exc) or type(exc).__name__)
        try:
            safe_url = self.redactor.scrub_url(exc.request.url)
        except RuntimeError:
            safe_url = ""
        clean = type(exc)(message, request=httpx.Request("GET", safe_url) if safe_url else None)
        return clean


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
    default_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
                       **spec.request.headers}
    client = httpx.Client(transport=transport, trust_env=False, follow_redirects=False,
                          headers=default_headers,
                          event_hooks={"response": [_take_location]})
    return GuardedClient(client, transport, guard, policy.capped(spec.transport), auth, base_url,
                         egress.max_redirects, egress.allow_cross_origin_redirects, redactor)
