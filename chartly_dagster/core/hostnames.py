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
