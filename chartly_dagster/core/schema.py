"""JSON Schema for variant overlays, derived from the profile model's own schema.

A variant is a JSON merge patch (RFC 7386) over `spec` and part of `metadata`: every key
is optional, `null` deletes, lists and scalars replace whole. Deriving that shape from the
model keeps one source of truth, so an editor flags a typo inside `variants` exactly as it
does in `spec`.
"""

from __future__ import annotations

import copy
from typing import Any

from .refs import SEGMENT

_REF = "#/$defs/"
PATCH_SUFFIX = "Patch"
# What a variant may change in metadata (the ref-forming keys stay fixed).
VARIANT_METADATA_KEYS = ("description", "owners", "labels")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null (a merge patch deletes with null); the description stays on top."""
    inner = {k: v for k, v in schema.items() if k != "description"}
    out: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
    if "description" in schema:
        out["description"] = schema["description"]
    return out


class _PatchDefs:
    """Builds `<Name>Patch` definitions on demand, each one once."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.added: dict[str, Any] = {}

    def ref(self, name: str, keep: tuple[str, ...] | None = None) -> dict[str, Any]:
        patch_name = name + PATCH_SUFFIX
        if patch_name not in self.added and patch_name not in self.defs:
            self.added[patch_name] = {}  # reserve first: definitions may refer to each other
            self.added[patch_name] = self.patch_object(self.defs[name], keep)
        return {"$ref": _REF + patch_name}

    def patch_object(self, schema: dict[str, Any], keep: tuple[str, ...] | None) -> dict[str, Any]:
        out = {k: v for k, v in schema.items() if k not in ("required", "properties", "title")}
        out["title"] = schema.get("title", "") + " (variant overlay)"
        out["properties"] = {
            key: _nullable(self.patch_value(value))
            for key, value in schema.get("properties", {}).items()
            if keep is None or key in keep}
        return out

    def patch_value(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A property's schema inside a patch: objects merge, everything else replaces."""
        schema = {k: v for k, v in schema.items() if k != "default"}
        ref = schema.get("$ref", "")
        if ref.startswith(_REF) and self.defs[ref.removeprefix(_REF)].get("type") == "object":
            return {**{k: v for k, v in schema.items() if k != "$ref"},
                    **self.ref(ref.removeprefix(_REF))}
        if "anyOf" in schema:
            return {**schema, "anyOf": [self.patch_value(s) for s in schema["anyOf"]]}
        if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"),
                                                         dict):
            return {**schema, "additionalProperties": _nullable(
                self.patch_value(schema["additionalProperties"]))}
        return schema


def with_variant_schema(schema: dict[str, Any], *, spec_def: str, metadata_def: str,
                        description: str) -> dict[str, Any]:
    """`schema` (a profile schema with `$defs`) whose `variants` property is typed."""
    out = copy.deepcopy(schema)
    patches = _PatchDefs(out["$defs"])
    overlay = {
        "type": "object",
        "additionalProperties": False,
        "title": "Variant overlay",
        "description": "JSON merge patch (RFC 7386): keys merge, null deletes, lists replace.",
        "properties": {
            "spec": patches.ref(spec_def),
            "metadata": patches.ref(metadata_def, keep=VARIANT_METADATA_KEYS),
        },
    }
    out["$defs"].update(patches.added)
    out["properties"]["variants"] = {
        "type": "object",
        "title": "Variants",
        "description": description,
        "propertyNames": {"pattern": f"^{SEGMENT}$"},
        "additionalProperties": overlay,
    }
    return out
