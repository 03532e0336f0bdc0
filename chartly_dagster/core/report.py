"""The connector-tester output document (header / plan / results / validation) and golden checks.

JSON is canonical: keys sorted, fixed float precision, and no timestamp but the window bounds,
so two runs of the same inputs print the same bytes and a golden file can be diffed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .. import __version__
from .canonical import canonical_json
from .catalog import ResolvedProfile
from .plan import Plan
from .refs import format_ref
from .windows import Window

TOOL = "chartly-tool connector-tester"
Mode = Literal["plan", "run", "validate"]
# Header fields a golden plan pins (tool version and mode flags may differ between runs).
GOLDEN_HEADER_FIELDS = ("connector_profile", "env", "project", "resolved_profile_hash",
                        "tenant", "window")


@dataclass(frozen=True)
class Invocation:
    """What the user asked for: the scope and flags that go into the header."""

    env: str
    tenant: str
    project: str
    mode: Mode
    dry_run: bool = False
    apply: bool = False


def header(inv: Invocation, resolved: ResolvedProfile, window: Window) -> dict[str, Any]:
    return {
        "tool": TOOL,
        "tool_version": __version__,
        "mode": inv.mode,
        "env": inv.env,
        "tenant": inv.tenant,
        "project": inv.project,
        "connector_profile": format_ref(resolved.ref),
        "resolved_profile_hash": resolved.hash,
        "window": window.to_dict(),
        "dry_run": inv.dry_run,
        "apply": inv.apply,
    }


def validation(findings: list[dict[str, Any]] | tuple[dict[str, Any], ...],
               code: str | None = None) -> dict[str, Any]:
    """The validation section; findings sorted by path (then content) so their order never
    depends on discovery."""
    ordered = sorted(findings, key=lambda f: (str(f.get("path", "")), canonical_json(f)))
    failed = bool(ordered) or code is not None
    return {"ok": not failed,
            "code": (code or "validation_failed") if failed else None,
            "findings": ordered}


def document(inv: Invocation, resolved: ResolvedProfile, window: Window, plan: Plan, *,
             findings: list[dict[str, Any]] | None = None, code: str | None = None,
             results: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "header": header(inv, resolved, window),
        "plan": plan.body,
        "validation": validation([*plan.findings, *(findings or [])], code),
    }
    if results is not None:
        doc["results"] = results
    return doc


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key in value:
            _flatten(value[key], f"{path}.{key}" if path else key, out)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        out[path] = value


def compare_to_golden(actual: dict[str, Any], golden: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings for every pinned field that differs, one per leaf path, in path order."""
    def pinned(doc: dict[str, Any]) -> dict[str, Any]:
        head = doc.get("header") or {}
        return {"header": {k: head.get(k) for k in GOLDEN_HEADER_FIELDS},
                "plan": doc.get("plan")}

    want: dict[str, Any] = {}
    have: dict[str, Any] = {}
    _flatten(pinned(golden), "", want)
    _flatten(pinned(actual), "", have)
    findings = []
    for path in sorted(set(want) | set(have)):
        if path not in have:
            findings.append({"code": "golden_missing", "path": path, "expected": want[path]})
        elif path not in want:
            findings.append({"code": "golden_unexpected", "path": path, "actual": have[path]})
        elif canonical_json(want[path]) != canonical_json(have[path]):
            findings.append({"code": "golden_mismatch", "path": path, "expected": want[path],
                             "actual": have[path]})
    return findings
