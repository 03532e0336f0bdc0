"""`make demo`: plan every shipped profile for one explicit day and print the plans as a table."""

from __future__ import annotations

from pathlib import Path

from .cli.profiles import GOLDEN_WINDOW
from .cli.render import table
from .core.catalog import ProfileCatalog
from .core.plan import build_plan
from .core.refs import format_ref
from .core.windows import Window


def main() -> int:
    catalog = ProfileCatalog.load(Path("profiles"))
    catalog.raise_for_issues()
    window = Window.parse(*GOLDEN_WINDOW)
    rows = []
    for resolved in catalog.resolve_all():
        plan = build_plan(resolved, window)
        rows.append([format_ref(resolved.ref), plan.body["pagination_mode"], len(plan.steps),
                     plan.body["continuation"]["source"], plan.plan_hash[:19]])
    print(f"Plans for window [{GOLDEN_WINDOW[0]}, {GOLDEN_WINDOW[1]}):\n")
    print(table(["profile", "pagination", "steps", "continuation", "plan hash"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
