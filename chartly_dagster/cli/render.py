"""Text rendering of output documents and tables, for people reading a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.canonical import canonical_json


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table; values are rendered with `str`."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def render_document(doc: dict[str, Any]) -> str:
    head, plan, val = doc["header"], doc["plan"], doc["validation"]
    lines = [
        f"{head['tool']} {head['mode']}  (tool {head['tool_version']})",
        f"  profile   {head['connector_profile']}",
        f"  hash      {head['resolved_profile_hash']}",
        f"  scope     env={head['env']} tenant={head['tenant']} project={head['project']}",
        f"  window    [{head['window']['start']}, {head['window']['end']})",
        f"  flags     dry_run={str(head['dry_run']).lower()} apply={str(head['apply']).lower()}",
        "",
        f"plan  {plan['pagination_mode']}  {plan['plan_hash']}",
        "  limits    " + "  ".join(f"{k}={v}" for k, v in sorted(plan["limits"].items())),
        f"  continue  {plan['continuation']['source']}: {plan['continuation']['stop']}",
    ]
    shown = plan["steps"][:5]
    for step in shown:
        query = "&".join(f"{k}={v}" for k, v in step["params"].items())
        lines.append(f"  step {step['index']:>3}  {step['method']} {step['url']}?{query}")
    if len(plan["steps"]) > len(shown):
        lines.append(f"  ... {len(plan['steps']) - len(shown)} more steps")
    results = doc.get("results")
    if results:
        lines += ["", "results"]
        lines += [f"  {k:<22}{canonical_json(v) if isinstance(v, dict | list) else v}"
                  for k, v in sorted(results.items())]
    lines += ["", f"validation  {'ok' if val['ok'] else 'FAILED (' + str(val['code']) + ')'}"]
    for finding in val["findings"]:
        where = finding.get("path", "")
        detail = finding.get("message") or (
            f"expected {canonical_json(finding.get('expected'))}, "
            f"got {canonical_json(finding.get('actual'))}")
        lines.append(f"  [{finding['code']}] {where}: {detail}")
    return "\n".join(lines) + "\n"
