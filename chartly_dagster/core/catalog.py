"""Load a tree of profile files, resolve refs and variants, freeze and hash the result.

Loading reports every broken file at once (path + field), because a CI job that fails on
the first error and hides the next five wastes everyone's afternoon.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

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


# Bounds that keep loading linear and shallow whatever a file holds: a profile is a few KB
# with ~150 nodes and 7 levels, so these leave ample room and stop alias bombs ("billion
# laughs"), deep nesting (RecursionError) and huge files before they cost time or memory.
MAX_PROFILE_BYTES = 256 * 1024
MAX_FOLDER_BYTES = 8 * 1024 * 1024
MAX_FOLDER_ENTRIES = 100_000
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 20_000


class _ProfileLoader(yaml.SafeLoader):
    """SafeLoader with bounded nesting and alias expansion that refuses duplicate keys.

    Aliases stay allowed (sharing a block between variants is legitimate YAML), but the tree
    they expand to is measured on the composed node graph, before anything walks it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # The composer recurses once per level: stop before Python's recursion limit does.
        event = self.peek_event()
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} YAML nodes", event.start_mark)
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        node: yaml.Node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML lets a scalar it cannot build (a 5,000-digit integer, `!!timestamp
        # 2020-13-45`) escape as a bare ValueError; give it the YAML error and position.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.tag.rsplit(':', 1)[-1]} value cannot be read "
                f"({exc.__class__.__name__})", node.start_mark) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand past the node or depth bound, or loop.

    Sizes and depths are memoized per node, so the check is linear in the nodes written,
    however many times aliases repeat them.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand to more than {MAX_YAML_NODES} nodes",
                    node.start_mark)
            if depth[key] > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand deeper than {MAX_YAML_DEPTH} levels",
                    node.start_mark)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that "
                                              "contains it", node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _construct_mapping(loader: _ProfileLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_ProfileLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                               _construct_mapping)
# Timestamps stay strings: pydantic parses them, and YAML's own datetime would lose "Z".
_ProfileLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> Any:
    """Parse one profile document; any malformed or hostile input raises `yaml.YAMLError`."""
    loader = _ProfileLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X | None`, `list[X]`, `Annotated[X, ...]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """Every key the profile model accepts at `loc` (list indexes skipped)."""
    models: list[type[BaseModel]] = [ConnectorProfile]
    for item in loc:
        if isinstance(item, int):
            continue
        models = [m for model in models for name, info in model.model_fields.items()
                  if (info.alias or name) == item for m in _models_in(info.annotation)]
    return sorted({info.alias or name for model in models
                   for name, info in model.model_fields.items()})


def _message(err: Any) -> str:
    message: str = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and err["loc"]:
        unknown = str(err["loc"][-1])
        close = difflib.get_close_matches(unknown, _keys_at(err["loc"][:-1]), n=1, cutoff=0.6)
        if not close:  # a snake_case spelling of a camelCase key
            close = difflib.get_close_matches(to_camel(unknown), _keys_at(err["loc"][:-1]),
                                              n=1, cutoff=0.9)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return message


def _validation_issues(path: str, exc: ValidationError, prefix: str = "") -> list[LoadIssue]:
    return [LoadIssue(path, f"{prefix}{_loc(err)}", _message(err))
            for err in exc.errors(include_url=False, include_input=False)]


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
        files = _profile_files(root_path)
        if files is None:
            return cls(root_path, {}, [LoadIssue(
                ".", "<folder>", f"more than {MAX_FOLDER_ENTRIES} entries under this folder; "
                "is it really the profiles folder?")])
        # A file over its own cap is reported as such below, not as the folder's problem.
        total = sum(min(_size_of(file), MAX_PROFILE_BYTES) for file in files)
        if total > MAX_FOLDER_BYTES:
            issue = LoadIssue(".", "<folder>", f"{len(files)} profile files hold {total} bytes, "
                              f"more than the {MAX_FOLDER_BYTES // 2**20} MiB a profiles folder "
                              "may hold; split them into several folders")
            return cls(root_path, {}, [issue])
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

    def refs_enabled_for(self, ref: ProfileRef, env: str) -> list[ProfileRef]:
        """The base and variants of `ref`'s profile whose resolved `spec.envs` include `env`."""
        return [r for r in self.refs() if r.base() == ref.base()
                and env in self.resolve(r).spec.envs]


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


def _profile_files(root: Path) -> list[Path] | None:
    """Every `*.yaml`/`*.yml` file under `root`, hidden entries and symlinked folders skipped;
    None when the walk passes `MAX_FOLDER_ENTRIES` (a `--profiles-dir /` must not scan a disk).
    """
    files: list[Path] = []
    seen = 0
    for folder, dirs, names in os.walk(root):
        seen += len(dirs) + len(names)
        if seen > MAX_FOLDER_ENTRIES:
            return None
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(folder, name) for name in names if not name.startswith(".")
                     and name.endswith(PROFILE_SUFFIXES) and Path(folder, name).is_file())
    return sorted(files)


def _size_of(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0  # reading it reports the problem with the file's name


def _read_text(file: Path) -> str:
    """The file's text, read no further than the cap (st_size can lie, e.g. under /proc)."""
    with file.open("rb") as handle:
        data = handle.read(MAX_PROFILE_BYTES + 1)
    if len(data) > MAX_PROFILE_BYTES:
        raise _TooLarge
    return data.decode("utf-8")


class _TooLarge(Exception):
    """A profile file over `MAX_PROFILE_BYTES`."""


def _load_file(file: Path, rel: str) -> tuple[_Entry | None, list[LoadIssue]]:
    try:
        raw = read_yaml(_read_text(file))
    except _TooLarge:
        return None, [LoadIssue(rel, "<file>", f"file is larger than "
                                f"{MAX_PROFILE_BYTES // 1024} KiB, the cap for one profile")]
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


def check_run_scope(resolved: ResolvedProfile, *, env: str, tenant: str, project: str,
                    catalog: ProfileCatalog | None = None) -> None:
    """Refuse a profile outside its tenant/project (access denied) or its allowed envs.

    With the catalog at hand, an env mismatch names the refs that are enabled for that env
    (usually the `#dev` variant someone forgot to add).
    """
    if (tenant, project) != (resolved.ref.tenant, resolved.ref.project):
        raise UnsafeOperationBlocked(
            f"profile {format_ref(resolved.ref)} belongs to {resolved.ref.namespace}, not "
            f"{tenant}/{project}: access denied", field="tenant")
    if env not in resolved.spec.envs:
        enabled = catalog.refs_enabled_for(resolved.ref, env) if catalog else []
        hint = (f"; enabled for {env}: " + ", ".join(
            f"#{r.variant}" if r.variant else "the base profile" for r in enabled)
            + f" (use {format_ref(enabled[0])})") if enabled else ""
        raise PreconditionFailed(
            f"profile {format_ref(resolved.ref)} is not enabled for env {env!r} "
            f"(spec.envs: {', '.join(resolved.spec.envs)}){hint}", field="env")
