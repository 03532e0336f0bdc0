"""Load a tree of profile files, resolve refs and variants, freeze and hash the result.

Loading reports every broken file at once (path + field), because a CI job that fails on
the first error and hides the next five wastes everyone's afternoon.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .canonical import hash_value
from .credentials import find_inline_credentials
from .errors import PreconditionFailed, ProfileInvalid, ProfileNotFound, UnsafeOperationBlocked
from .profile import ConnectorProfile, ConnectorSpec
from .refs import ProfileRef, format_ref

PROFILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadIssue:
    """One problem found while loading: which file, which field, what is wrong."""

    path: str
    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.message}"


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with its variant applied, validated again, frozen and hashed."""

    ref: ProfileRef
    profile: ConnectorProfile
    document: dict[str, Any] = field(repr=False, compare=False)
    hash: str
    source_path: str

    @property
    def spec(self) -> ConnectorSpec:
        return self.profile.spec

    @property
    def connector(self) -> str:
        return self.profile.metadata.name


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_mapping)
# Timestamps stay strings: pydantic parses them, and YAML's own datetime would lose "Z".
_UniqueKeyLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): objects merge, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _loc(error: dict[str, Any]) -> str:
    parts: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<document>"


def _validation_issues(path: str, exc: ValidationError, prefix: str = "") -> list[LoadIssue]:
    issues = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _loc(err)
        message = err["msg"].removeprefix("Value error, ")
        issues.append(LoadIssue(path, f"{prefix}{loc}", message))
    return issues


def _dump(profile: ConnectorProfile) -> dict[str, Any]:
    return profile.model_dump(by_alias=True, mode="json", exclude={"variants"})


def _resolve_document(raw: dict[str, Any], variant: str | None) -> dict[str, Any]:
    base = {k: v for k, v in raw.items() if k != "variants"}
    if variant is None:
        return base
    return merge_patch(base, raw["variants"][variant])


@dataclass
class _Entry:
    path: str
    raw: dict[str, Any]
    profile: ConnectorProfile


class ProfileCatalog:
    """Every profile under a folder, keyed by base ref; resolves refs with their variants."""

    def __init__(self, root: Path, entries: dict[ProfileRef, _Entry],
                 issues: list[LoadIssue]) -> None:
        self.root = root
        self._entries = entries
        self.issues = sorted(issues, key=lambda i: (i.path, i.field, i.message))

    @classmethod
    def load(cls, root: str | Path) -> ProfileCatalog:
        """Read every `*.yaml`/`*.yml` under `root` (any depth), collecting every issue."""
        root_path = Path(root)
        if not root_path.is_dir():
            raise PreconditionFailed(f"profiles folder {str(root_path)!r} does not exist",
                                     field="--profiles-dir")
        entries: dict[ProfileRef, _Entry] = {}
        issues: list[LoadIssue] = []
        files = sorted(p for p in root_path.rglob("*") if p.suffix in PROFILE_SUFFIXES
                       and p.is_file() and not any(part.startswith(".") for part in
                                                    p.relative_to(root_path).parts))
        for file in files:
            rel = file.relative_to(root_path).as_posix()
            entry, file_issues = _load_file(file, rel)
            issues.extend(file_issues)
            if entry is None:
                continue
            ref = ref_of(entry.profile)
            if ref in entries:
                issues.append(LoadIssue(rel, "metadata", f"ref {format_ref(ref)} is already "
                                        f"defined in {entries[ref].path}"))
                continue
            entries[ref] = entry
        return cls(root_path, entries, issues)

    def raise_for_issues(self) -> None:
        if self.issues:
            lines = "\n".join(f"  {issue}" for issue in self.issues)
            raise ProfileInvalid(f"{len(self.issues)} profile problem(s):\n{lines}",
                                 errors=[i.to_dict() for i in self.issues])

    def refs(self) -> list[ProfileRef]:
        """Every resolvable ref: each base and each of its variants, sorted."""
        out: list[ProfileRef] = []
        for ref, entry in self._entries.items():
            out.append(ref)
            out.extend(ref.with_variant(v) for v in entry.profile.variants)
        return sorted(out, key=lambda r: (r.base(), r.variant or ""))

    def resolve(self, ref: ProfileRef) -> ResolvedProfile:
        """Resolve one ref; unknown ref or variant is precondition_failed (exit 3)."""
        entry = self._entries.get(ref.base())
        if entry is None:
            known = ", ".join(format_ref(r) for r in sorted(self._entries)) or "none"
            raise ProfileNotFound(f"profile {format_ref(ref.base())} not found under "
                                  f"{str(self.root)!r} (known: {known})", field="connector-profile")
        if ref.variant is not None and ref.variant not in entry.profile.variants:
            known = ", ".join(sorted(entry.profile.variants)) or "none"
            raise ProfileNotFound(f"profile {format_ref(ref.base())} has no variant "
                                  f"{ref.variant!r} (variants: {known})", field="variant")
        return _resolve_entry(entry, ref)

    def resolve_all(self) -> list[ResolvedProfile]:
        return [self.resolve(ref) for ref in self.refs()]


def ref_of(profile: ConnectorProfile) -> ProfileRef:
    return ProfileRef(profile.tenant, profile.project, profile.metadata.name,
                      profile.metadata.version)


def _resolve_entry(entry: _Entry, ref: ProfileRef) -> ResolvedProfile:
    doc = _resolve_document(entry.raw, ref.variant)
    try:
        profile = ConnectorProfile.model_validate(doc)
    except ValidationError as exc:
        issues = _validation_issues(entry.path, exc, prefix=f"variants.{ref.variant}: ")
        raise ProfileInvalid("; ".join(str(i) for i in issues),
                             errors=[i.to_dict() for i in issues]) from None
    document = _dump(profile)
    digest = hash_value({"ref": format_ref(ref), "profile": document})
    return ResolvedProfile(ref, profile, document, digest, entry.path)


def _load_file(file: Path, rel: str) -> tuple[_Entry | None, list[LoadIssue]]:
    try:
        raw = read_yaml(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, [LoadIssue(rel, "<file>", f"cannot read: {exc.__class__.__name__}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [LoadIssue(rel, "<yaml>", f"invalid YAML{where}: {problem}")]
    if not isinstance(raw, dict):
        return None, [LoadIssue(rel, "<document>", "a profile must be a YAML mapping")]
    credentials = find_inline_credentials(raw)
    if credentials:
        return None, [LoadIssue(rel, path, reason) for path, reason in credentials]
    try:
        profile = ConnectorProfile.model_validate(raw)
    except ValidationError as exc:
        return None, _validation_issues(rel, exc)
    entry = _Entry(rel, raw, profile)
    issues: list[LoadIssue] = []
    for variant in profile.variants:
        try:
            _resolve_entry(entry, ref_of(profile).with_variant(variant))
        except ProfileInvalid as exc:
            issues.extend(LoadIssue(**e) for e in exc.errors)
    return (None if issues else entry), issues


def check_run_scope(resolved: ResolvedProfile, *, env: str, tenant: str, project: str) -> None:
    """Refuse a profile outside its tenant/project (access denied) or its allowed envs."""
    if (tenant, project) != (resolved.ref.tenant, resolved.ref.project):
        raise UnsafeOperationBlocked(
            f"profile {format_ref(resolved.ref)} belongs to {resolved.ref.namespace}, not "
            f"{tenant}/{project}: access denied", field="tenant")
    if env not in resolved.spec.envs:
        raise PreconditionFailed(
            f"profile {format_ref(resolved.ref)} is not enabled for env {env!r} "
            f"(spec.envs: {', '.join(resolved.spec.envs)})", field="env")
