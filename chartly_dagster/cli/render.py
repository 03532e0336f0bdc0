"""Text rendering of output documents and tables, for people reading a terminal.

Text is laid out for 80 columns, the width every terminal offers, rather than the width
of the one at hand: the same command prints the same bytes wherever it runs. Values wrap
at spaces; full hashes and refs are never shortened (JSON has every value verbatim).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from ..core.canonical import canonical_json

WIDTH = 80
LABEL = 9  # "continue " and "sha256:<64 hex>" fill exactly 80 columns


def _wrap(text: str, room: int) -> list[str]:
    return textwrap.wrap(text, max(20, room), break_long_words=False,
                         break_on_hyphens=False) or [""]


def field(label: str, value: str, *, indent: int = 0, label_width: int = LABEL) -> list[str]:
    """`label value`, the value wrapped under itself when it is longer than the line."""
    lead = " " * indent + f"{label:<{label_width - 1}} "
    lines = _wrap(value, WIDTH - len(lead))
    if len(lead) + len(lines[0]) > WIDTH:  # one long word (a hash, a path): a line of its own
        below = " " * (indent + 2)
        return [lead.rstrip(), *(below + line for line in _wrap(value, WIDTH - len(below)))]
    return [lead + lines[0], *(" " * len(lead) + line for line in lines[1:])]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: int = 0) -> str:
    """A plain aligned table; values are rendered with `str`."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "".join(" " * indent + line + "\n" for line in lines)


def grouped_table(headers: Sequence[str], groups: dict[str, list[list[Any]]]) -> str:
    """One table per group under its heading (e.g. a namespace, so refs need not repeat it)."""
    return "\n".join(f"{name}\n{table(headers, rows, indent=2)}"
                     for name, rows in sorted(groups.items()))


def _readable(value: Any) -> str:
    """Scalars as they are; objects as canonical JSON with room to wrap after commas."""
    if isinstance(value, dict | list):
        return canonical_json(value).replace(",", ", ")
    return str(value)


def render_document(doc: dict[str, Any]) -> str:
    head, plan, val = doc["header"], doc["plan"], doc["validation"]
    window = head["window"]
    lines = [
        f"{head['tool']} {head['mode']}  (tool {head['tool_version']})",
        *field("profile", head["connector_profile"]),
        *field("hash", head["resolved_profile_hash"]),
        *field("scope", f"env={head['env']} tenant={head['tenant']} "
                        f"project={head['project']}"),
        *field("window", f"[{window['start']}, {window['end']})"),
        *field("flags", f"dry_run={str(head['dry_run']).lower()} "
                        f"apply={str(head['apply']).lower()}"),
        "",
        *field("plan", plan["pagination_mode"]),
        *field("hash", plan["plan_hash"]),
        *field("limits", " ".join(f"{k}={v}" for k, v in sorted(plan["limits"].items()))),
        *field("continue", f"{plan['continuation']['source']}: "
                           f"{plan['continuation']['stop']}"),
    ]
    shown = plan["steps"][:5]
    for step in shown:
        lines += field(f"step {step['index']}", f"{step['method']} {step['url']}")
        query = " ".join(f"{k}={v}" for k, v in step["params"].items())
        if query:
            lines += field("", query, indent=LABEL, label_width=2)
    if len(plan["steps"]) > len(shown):
        lines.append(f"... {len(plan['steps']) - len(shown)} more steps")
    results = doc.get("results")
    if results:
        lines += ["", "results"]
        width = 2 + max(len(k) for k in results) + 1
        for key, value in sorted(results.items()):
            lines += field(key, _readable(value), indent=2, label_width=width - 2)
    lines += ["", f"validation  {'ok' if val['ok'] else 'FAILED (' + str(val['code']) + ')'}"]
    for finding in val["findings"]:
        where = finding.get("path", "")
        detail = finding.get("message") or (
            f"expected {canonical_json(finding.get('expected'))}, "
            f"got {canonical_json(finding.get('actual'))}")
        text = _wrap(f"[{finding['code']}] {where}: {detail}", WIDTH - 4)
        lines += ["  " + text[0], *("    " + line for line in text[1:])]
    return "\n".join(lines) + "\n"
