"""The egress guard: which hosts, ports and IP addresses a connector may reach.

The check that matters runs at connection time, inside an httpcore network backend: the
host is resolved once, every answer is checked against explicit address tables, and the
socket is opened to the checked IP literal while TLS SNI, certificate checking and `Host`
keep using the name. Nothing resolves the name a second time, so DNS rebinding has no gap
to use. Python's `ipaddress.is_global`/`is_private` change between patch releases, so the
tables below are written out by hand. `EnvPolicy` says which of those tables each
environment lets a profile open.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import httpcore
import httpx

from ..core.hostnames import (
    HostnameError,
    canonical_ip_literal,
    host_matches,
    is_ip_literal,
    is_numeric_host,
    normalize_hostname,
)
from ..core.profile import Transport
from .errors import EgressRefused, Reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Never reachable, whatever a profile's allowedCidrs say: metadata services, addresses that
# are not one host, and IPv6 forms that smuggle an IPv4 address past the IPv4 tables.
HARD_DENY: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("metadata", _nets("169.254.169.254/32", "169.254.170.2/32", "169.254.170.23/32",
                       "100.100.100.200/32", "192.0.0.192/32", "fd00:ec2::254/128",
                       "fd00:ec2::23/128")),
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("broadcast", _nets("255.255.255.255/32")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("ipv4_mapped", _nets("::ffff:0:0/96")),
    ("ipv4_translated", _nets("::ffff:0:0:0/96")),
    ("nat64", _nets("64:ff9b::/96", "64:ff9b:1::/48")),
    ("6to4", _nets("2002::/16")),
    ("teredo", _nets("2001::/32")),
    # ::/96 holds the deprecated IPv4-compatible form; ::1 is carved out below as loopback.
    ("ipv4_compatible", _nets("::/96")),
)
HARD_DENY_EXCEPTIONS = _nets("::1/128")

# Refused unless an allowed CIDR (restricted per env) covers the address.
SOFT_DENY: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("cgnat", _nets("100.64.0.0/10")),
    ("link_local", _nets("169.254.0.0/16", "fe80::/10")),
    ("site_local", _nets("fec0::/10")),
    ("benchmarking", _nets("198.18.0.0/15", "2001:2::/48")),
    ("documentation", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                            "2001:db8::/32", "3fff::/20")),
    ("reserved", _nets("240.0.0.0/4", "192.88.99.0/24", "100::/64", "5f00::/16")),
    # After benchmarking: 2001:2::/48 sits inside 2001::/23; the more specific name wins.
    ("ietf_protocol", _nets("192.0.0.0/24", "2001::/23")),
)
# Only 2000::/3 is allocated global unicast; anything else in IPv6 is refused.
IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
#: categories no allowedCidrs entry can open
HARD_CATEGORIES = frozenset({"scoped", *(category for category, _ in HARD_DENY)})


def classify_address(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """The refused category of `ip`, or None when it may be connected to.

    Hard-denied categories win over `allowed`; soft-denied ones yield to a covering CIDR.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "scoped"
    for category, nets in HARD_DENY:
        if any(ip in net for net in nets) and not any(ip in n for n in HARD_DENY_EXCEPTIONS):
            return category
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    for category, nets in SOFT_DENY:
        if any(ip in net for net in nets):
            return category
    if isinstance(ip, ipaddress.IPv6Address) and ip not in IPV6_GLOBAL_UNICAST:
        return "reserved"
    return None


LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")
PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def _default_env_cidrs() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({
        "dev": LOOPBACK_CIDRS + PRIVATE_CIDRS,
        "staging": PRIVATE_CIDRS,
        "prod": PRIVATE_CIDRS,
    })


def _env_policy(cidrs: dict[str, tuple[str, ...]], *others: Any) -> EnvPolicy:
    return EnvPolicy(MappingProxyType(cidrs), *others)


@dataclass(frozen=True)
class EnvPolicy:
    """What each environment lets a profile open up: CIDRs into private space, plain http.

    A profile's `allowedCidrs` entry must sit inside one of its env's ranges; metadata
    addresses stay refused whatever is allowed (see `HARD_DENY`).
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

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its read-only mapping as a plain dict (a worker process gets the
        step's policy this way)."""
        return (_env_policy, (dict(self.allowable_cidrs), self.plaintext_http_envs,
                              self.max_timeout_ms, self.max_connect_timeout_ms,
                              self.max_deadline_ms))

    def capped(self, transport: Transport) -> Transport:
        """The profile's transport with each timeout lowered to its cap (never raised)."""
        caps = {"timeout_ms": self.max_timeout_ms,
                "connect_timeout_ms": self.max_connect_timeout_ms,
                "deadline_ms": self.max_deadline_ms}
        update = {name: min(getattr(transport, name), cap)
                  for name, cap in caps.items() if cap is not None}
        return transport.model_copy(update=update) if update else transport

    def env_networks(self) -> tuple[tuple[str, tuple[IPNetwork, ...]], ...]:
        """Each env's permitted ranges as networks, in the policy's order."""
        return tuple((env, _nets(*cidrs)) for env, cidrs in self.allowable_cidrs.items())

    def networks_for(self, env: str, cidrs: list[str]) -> tuple[IPNetwork, ...]:
        """The profile's CIDRs as networks; refuses any the env does not permit."""
        table = dict(self.env_networks())
        out = []
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr)
            if not any(_within(net, a) for a in table.get(env, ())):
                envs = [name for name, nets in table.items()
                        if any(_within(net, a) for a in nets)]
                where = (f"envs that permit it: {', '.join(envs)}" if envs
                         else "no env permits it")
                raise EgressRefused(Reason.CIDR_NOT_PERMITTED,
                                    f"egressPolicy.allowedCidrs entry {cidr} is not permitted "
                                    f"in env {env!r} ({where})", field="egressPolicy.allowedCidrs")
            out.append(net)
        return tuple(out)

    def schemes_for(self, env: str) -> frozenset[str]:
        return frozenset({"http", "https"} if env in self.plaintext_http_envs else {"https"})


def _within(net: IPNetwork, outer: IPNetwork) -> bool:
    return net.version == outer.version and net.subnet_of(outer)  # type: ignore[arg-type]


def default_port(url: httpx.URL) -> int:
    """The URL's port, or its scheme's; an explicit `:0` stays 0 (and is refused)."""
    if url.port is not None:
        return url.port
    return 443 if url.scheme == "https" else 80


def parse_address(text: str) -> IPAddress:
    """An answer from a resolver as an address object; compare objects, never strings."""
    return ipaddress.ip_address(text.strip("[]"))


@dataclass(frozen=True)
class EgressGuard:
    """The policy of one profile: allowlisted names, ports, schemes and allowed CIDRs."""

    dns_allowlist: tuple[str, ...]
    allowed_ports: frozenset[int]
    allowed_schemes: frozenset[str]
    allowed_networks: tuple[IPNetwork, ...] = ()
    #: every env's permitted ranges (the env policy's table), only so that a refusal can
    #: say which envs could open an address
    env_networks: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = ()

    def check_host(self, host: str) -> str:
        """The normalised host if it is an allowlisted DNS name, or a canonical IP literal
        inside the allowed CIDRs; raises `EgressRefused`."""
        if is_ip_literal(host):
            return self._check_ip_host(host)
        if is_numeric_host(host):
            raise EgressRefused(Reason.NUMERIC_HOST,
                                f"host {host!r} is a numeric address form")
        try:
            name = normalize_hostname(host)
        except HostnameError as exc:
            raise EgressRefused(Reason.INVALID_HOST, str(exc)) from None
        if is_ip_literal(name) or is_numeric_host(name):
            raise EgressRefused(Reason.NUMERIC_HOST,
                                f"host {host!r} normalises to a numeric address form")
        if not host_matches(name, self.dns_allowlist):
            raise EgressRefused(Reason.HOST_NOT_ALLOWLISTED,
                                f"host {name!r} is not in egressPolicy.dnsAllowlist")
        return name

    def check_port(self, port: int) -> None:
        if port not in self.allowed_ports:
            raise EgressRefused(Reason.PORT_NOT_ALLOWED,
                                f"port {port} is not allowed (allowed: "
                                f"{', '.join(map(str, sorted(self.allowed_ports)))})")

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """Parse and check a request URL before anything touches the network."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise EgressRefused(Reason.INVALID_URL, "URL does not parse") from None
        scheme = parsed.scheme
        if not scheme:
            raise EgressRefused(Reason.INVALID_URL, "URL must be absolute")
        if scheme not in ("http", "https"):
            raise EgressRefused(Reason.SCHEME_NOT_ALLOWED,
                                f"scheme {scheme!r} is not http or https")
        if scheme not in self.allowed_schemes:
            raise EgressRefused(Reason.INSECURE_SCHEME,
                                f"scheme {scheme!r} is not allowed in this environment")
        if parsed.userinfo:
            raise EgressRefused(Reason.USERINFO_IN_URL,
                                "URL carries userinfo; credentials go in auth.secretRef")
        if not parsed.host:
            raise EgressRefused(Reason.INVALID_URL, "URL has no host")
        self.check_host(parsed.host)
        port = default_port(parsed)
        if not 1 <= port <= 65535:
            raise EgressRefused(Reason.INVALID_URL, f"port {port} is out of range")
        self.check_port(port)
        return parsed

    def check_address(self, ip: IPAddress, *, host: str) -> IPAddress:
        category = classify_address(ip, self.allowed_networks)
        if category is not None:
            raise EgressRefused(
                Reason.ADDRESS_REFUSED,
                f"host {host!r} resolved to {ip} ({category}), which is not allowed"
                f"{self._how_to_open(ip)}", category=category)
        return ip

    def _check_ip_host(self, host: str) -> str:
        """An IP literal is a host only in canonical form and inside an allowed CIDR."""
        ip = canonical_ip_literal(host)
        if ip is None:
            raise EgressRefused(Reason.IP_LITERAL_HOST,
                                f"host {host!r} is an IP address in a non-canonical form; only "
                                "a dotted quad or a compressed IPv6 address (no zone id)")
        if not any(ip.version == net.version and ip in net for net in self.allowed_networks):
            raise EgressRefused(Reason.IP_LITERAL_HOST,
                                f"host {host!r} is an IP address outside "
                                f"egressPolicy.allowedCidrs{self._how_to_open(ip)}")
        self.check_address(ip, host=host)
        return str(ip)

    def _how_to_open(self, ip: IPAddress) -> str:
        """The allowedCidrs entry that would let `ip` through, and the envs that permit it."""
        if classify_address(ip) in HARD_CATEGORIES:
            return "; no egressPolicy.allowedCidrs entry can open it"
        entry = ipaddress.ip_network(ip)
        envs = [env for env, nets in self.env_networks
                if any(ip.version == net.version and ip in net for net in nets)]
        if not envs:
            return (f"; no env permits an egressPolicy.allowedCidrs entry such as {entry} "
                    "(the deployment's EnvPolicy: ChartlyResource egress.allowed_cidrs)")
        return (f"; egressPolicy.allowedCidrs entry {entry} (or a range holding it) would "
                f"allow it in env {', '.join(envs)}")


class Resolver(Protocol):
    """Turns a host name into addresses; injectable so tests can play DNS."""

    def resolve(self, host: str, port: int) -> Sequence[str]: ...


class SystemResolver:
    """`getaddrinfo` with a timeout, since the C call has none we can set."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    def resolve(self, host: str, port: int) -> Sequence[str]:
        box: dict[str, typing.Any] = {}

        def lookup() -> None:
            try:
                box["answers"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                box["error"] = exc

        worker = threading.Thread(target=lookup, name="chartly-dns", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            raise httpcore.ConnectTimeout(f"DNS lookup of {host!r} timed out")
        if "error" in box:
            raise httpcore.ConnectError(f"DNS lookup of {host!r} failed: {box['error']}")
        seen: dict[str, None] = {}
        for _family, _type, _proto, _canon, sockaddr in box["answers"]:
            seen.setdefault(str(sockaddr[0]), None)
        return list(seen)


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """Every new connection goes through here: resolve once, check all, connect to the IP."""

    def __init__(self, guard: EgressGuard, resolver: Resolver | None = None,
                 inner: httpcore.NetworkBackend | None = None) -> None:
        self.guard = guard
        self.resolver = resolver or SystemResolver()
        self.inner = inner or httpcore.SyncBackend()

    def resolve_checked(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses of `host`; any refused answer refuses the whole lookup."""
        name = self.guard.check_host(host)
        self.guard.check_port(port)
        literal = canonical_ip_literal(name)
        if literal is not None:  # an allowed IP literal: checked, nothing to look up
            return [literal]
        try:
            answers = list(self.resolver.resolve(name, port))
        except OSError as exc:
            raise httpcore.ConnectError(f"DNS lookup of {name!r} failed: {exc}") from None
        if not answers:
            raise httpcore.ConnectError(f"DNS lookup of {name!r} returned no address")
        addresses = []
        for answer in answers:
            try:
                ip = parse_address(str(answer))
            except ValueError:
                raise httpcore.ConnectError(
                    f"DNS lookup of {name!r} returned a non-address answer") from None
            addresses.append(self.guard.check_address(ip, host=name))
        return addresses

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[typing.Any] | None = None,
                    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for ip in self.resolve_checked(host, port):
            try:
                return self.inner.connect_tcp(str(ip), port, timeout=timeout,
                                              local_address=local_address,
                                              socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None  # resolve_checked never returns an empty list
        raise last_error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[typing.Any] | None = None,
                            ) -> httpcore.NetworkStream:
        raise EgressRefused(Reason.UNIX_SOCKET_REFUSED, "unix sockets are never used")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)
