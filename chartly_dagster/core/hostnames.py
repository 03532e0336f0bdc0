"""Host names and DNS allowlist patterns, normalised once so every comparison agrees.

Case, a trailing dot and Unicode vs punycode spellings must not change what a name
matches, or an allowlist can be walked around.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from publicsuffixlist import PublicSuffixList

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Forms that C resolvers (inet_aton) turn into addresses: 2130706433, 0x7f000001, 127.1,
# 0177.0.0.1. A real DNS name never ends in an all-numeric or 0x label.
_NUMERIC_LABEL_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


class HostnameError(ValueError):
    """A host name or allowlist pattern that cannot be normalised."""


def normalize_hostname(host: str) -> str:
    """Lowercase ASCII (IDNA) form without a trailing dot; raises `HostnameError`."""
    if not host or host != host.strip():
        raise HostnameError(f"host {host!r} is empty or has surrounding whitespace")
    name = host[:-1] if host.endswith(".") else host
    if not name or name.endswith("."):
        raise HostnameError(f"host {host!r} has an empty label")
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise HostnameError(f"host {host!r} is not a valid IDNA name") from exc
    if len(ascii_name) > 253:
        raise HostnameError(f"host {host!r} is longer than 253 characters")
    for label in ascii_name.split("."):
        if not _LABEL_RE.match(label):
            raise HostnameError(f"host {host!r} has an invalid label {label!r}")
    return ascii_name


def is_ip_literal(host: str) -> bool:
    text = host.strip("[]").split("%", 1)[0]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_numeric_host(host: str) -> bool:
    """True for hosts a C resolver would read as an IPv4 number instead of a name."""
    name = host.rstrip(".")
    return not name or bool(_NUMERIC_LABEL_RE.match(name.rsplit(".", 1)[-1]))


def canonical_ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of a host written in its one canonical form, else None.

    Canonical: a dotted quad without leading zeros (`10.0.0.5`), or an IPv6 address in
    RFC 5952 form (`::1`, `fd00::5`; brackets allowed, hex case ignored) without a zone
    id. Every other spelling (`[0000::1]`, `::ffff:127.0.0.1`, `127.1`, `0x7f000001`) is
    not an address a profile may name: those are the forms that slip past comparisons.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip if str(ip) == text.lower() else None


def check_base_url_host(host: str, dns_allowlist: list[str], allowed_cidrs: list[str]) -> None:
    """A profile's `transport.baseUrl` host: an allowlisted name, or a canonical IP literal
    inside one of the profile's `allowedCidrs` (the env may still refuse that CIDR).

    Raises ValueError naming the field and the fix.
    """
    if is_ip_literal(host):
        ip = canonical_ip_literal(host)
        if ip is None:
            raise ValueError(f"transport.baseUrl host {host!r} is an IP address in a "
                             "non-canonical form; write a dotted quad or a bracketed IPv6 "
                             "address in its compressed form, without a zone id")
        if not any(ip in net for net in (ipaddress.ip_network(c) for c in allowed_cidrs)
                   if net.version == ip.version):
            raise ValueError(f"transport.baseUrl host {host!r} is an IP address outside "
                             f"egressPolicy.allowedCidrs; add {ipaddress.ip_network(ip)} "
                             "(or a range holding it) or name the host")
        return
    try:
        name = normalize_hostname(host)
    except HostnameError as exc:
        raise ValueError(f"transport.baseUrl: {exc}") from exc
    if is_numeric_host(name):
        raise ValueError(f"transport.baseUrl host {host!r} is a numeric address form; "
                         "write a canonical dotted quad")
    if not host_matches(name, dns_allowlist):
        raise ValueError(f"transport.baseUrl host {name!r} is not in "
                         "egressPolicy.dnsAllowlist")


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    return PublicSuffixList()


def is_public_suffix(name: str) -> bool:
    """True for `co.uk`, `github.io`, ...: suffixes under which anyone can register names.

    Uses the Public Suffix List bundled with `publicsuffixlist` (ICANN and private
    sections), so the answer does not depend on the network.
    """
    return bool(_public_suffix_list().is_public(normalize_hostname(name)))


def normalize_allowlist_pattern(pattern: str) -> str:
    """`api.example.com` or `*.example.com`, normalised; IP literals and bare wildcards refused."""
    if is_ip_literal(pattern):
        raise HostnameError(
            f"dnsAllowlist entry {pattern!r} is an IP address; use egressPolicy.allowedCidrs")
    if pattern.startswith("*."):
        suffix = normalize_hostname(pattern[2:])
        if "." not in suffix:
            raise HostnameError(
                f"dnsAllowlist wildcard {pattern!r} covers a whole top-level domain")
        if is_public_suffix(suffix):
            raise HostnameError(
                f"dnsAllowlist wildcard {pattern!r} covers a public suffix (names anyone "
                "can register); list the registered domain instead")
        return f"*.{suffix}"
    if "*" in pattern:
        raise HostnameError(
            f"dnsAllowlist entry {pattern!r}: a wildcard is only allowed as a leading '*.'")
    return normalize_hostname(pattern)


def host_matches(host: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when the normalised `host` equals an exact entry or sits under a `*.` suffix."""
    try:
        name = normalize_hostname(host)
    except HostnameError:
        return False
    for pattern in patterns:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]):
                return True
        elif name == pattern:
            return True
    return False
