"""Profile refs: `tenant/project::connector/name@version[#variant]`, parsed and formatted.

A ref is how users, golden files and Dagster tags name one resolved profile, so the
grammar is strict and every error names the part that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RefSyntaxError

SEGMENT = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SEGMENT_RE = re.compile(rf"^{SEGMENT}$")
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
# Semantic version 2.0.0: MAJOR.MINOR.PATCH[-prerelease][+build]
_VERSION_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
KIND = "connector"


@dataclass(frozen=True, order=True)
class ProfileRef:
    """One profile ref; `variant` is None for the base profile."""

    tenant: str
    project: str
    name: str
    version: str
    variant: str | None = None

    @property
    def namespace(self) -> str:
        return f"{self.tenant}/{self.project}"

    def base(self) -> ProfileRef:
        """The same ref without its variant."""
        return ProfileRef(self.tenant, self.project, self.name, self.version)

    def with_variant(self, variant: str | None) -> ProfileRef:
        return ProfileRef(self.tenant, self.project, self.name, self.version, variant)

    def __str__(self) -> str:
        return format_ref(self)


def _check(pattern: re.Pattern[str], value: str, part: str, ref: str) -> str:
    if not value:
        raise RefSyntaxError(f"invalid profile ref {ref!r}: {part} is empty", field=part)
    if not pattern.match(value):
        raise RefSyntaxError(
            f"invalid profile ref {ref!r}: {part} {value!r} is not valid "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit)"
            if part != "version"
            else f"invalid profile ref {ref!r}: version {value!r} is not a semantic version "
            "(MAJOR.MINOR.PATCH)",
            field=part,
        )
    return value


def parse_ref(text: str) -> ProfileRef:
    """Parse a ref; raises `RefSyntaxError` naming the part at fault."""
    if not isinstance(text, str):
        raise RefSyntaxError("profile ref must be a string", field="ref")
    ref = text
    if ref != ref.strip() or any(ch.isspace() for ch in ref):
        raise RefSyntaxError(f"invalid profile ref {ref!r}: whitespace is not allowed", field="ref")
    if ref.count("::") != 1:
        raise RefSyntaxError(
            f"invalid profile ref {ref!r}: expected exactly one '::' between namespace and "
            "'connector/name@version'", field="namespace")
    namespace, rest = ref.split("::")
    if namespace.count("/") != 1:
        raise RefSyntaxError(
            f"invalid profile ref {ref!r}: namespace {namespace!r} must be 'tenant/project'",
            field="namespace")
    tenant, project = namespace.split("/")
    _check(_SEGMENT_RE, tenant, "tenant", ref)
    _check(_SEGMENT_RE, project, "project", ref)
    variant: str | None = None
    if "#" in rest:
        rest, variant = rest.split("#", 1)
        _check(_SEGMENT_RE, variant, "variant", ref)
    kind, slash, rest = rest.partition("/")
    if not slash or kind != KIND:
        raise RefSyntaxError(
            f"invalid profile ref {ref!r}: expected 'connector/' after '::', got {kind!r}",
            field="kind")
    if rest.count("@") != 1:
        raise RefSyntaxError(
            f"invalid profile ref {ref!r}: expected exactly one '@' between name and version",
            field="version")
    name, version = rest.split("@")
    _check(_NAME_RE, name, "name", ref)
    _check(_VERSION_RE, version, "version", ref)
    return ProfileRef(tenant, project, name, version, variant)


def format_ref(ref: ProfileRef) -> str:
    text = f"{ref.tenant}/{ref.project}::{KIND}/{ref.name}@{ref.version}"
    return f"{text}#{ref.variant}" if ref.variant else text


def is_valid_segment(value: str) -> bool:
    return bool(_SEGMENT_RE.match(value))


def is_valid_name(value: str) -> bool:
    return bool(_NAME_RE.match(value))


def is_valid_version(value: str) -> bool:
    return bool(_VERSION_RE.match(value))
