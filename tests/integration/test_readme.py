"""Every Python example of the README's "In Dagster" section runs as written.

Each snippet is executed verbatim from a folder whose `profiles/` are the shipped ones with
the dev variants pointed at this test's sandbox (the relative "profiles" in the snippet
finds them), and the definitions it builds are materialized through Dagster.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance, Definitions, materialize

from chartly_dagster.integration import PartitionMetadata
from chartly_dagster.sandbox import Sandbox
from tests.support.paths import REPO

PARTITION = "2026-01-05"


def _section_snippets() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## In Dagster"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


SNIPPETS = _section_snippets()


def test_the_section_has_python_examples() -> None:
    assert len(SNIPPETS) == 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_and_materializes(
        index: int, sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sandbox_profiles.parent)
    monkeypatch.delenv("CHARTLY_ENV", raising=False)
    namespace: dict[str, Any] = {"__name__": f"readme_snippet_{index}"}
    # dont_inherit: this module's `from __future__ import annotations` must not leak in.
    exec(compile(SNIPPETS[index], f"README.md snippet {index}", "exec", dont_inherit=True),
         namespace)
    defs = namespace["defs"]
    assert isinstance(defs, Definitions)
    orders = [a for a in defs.assets or []
              if any(k.path[-1] == "orders" for k in a.keys)]
    assert len(orders) == 1
    (key,) = orders[0].keys
    assert key in (AssetKey(["raw", "tenant-demo", "proj-sales", "orders"]),
                   AssetKey(["tenant-demo", "proj-sales", "orders"]))
    result = materialize(orders, instance=dagster_instance, partition_key=PARTITION,
                         resources=defs.resources)
    assert result.success
    mat = result.asset_materializations_for_node(orders[0].node_def.name)[0]
    meta = PartitionMetadata.extract(mat.metadata)
    assert meta.records == len(sandbox.ground_truth(
        "/v2/orders", f"{PARTITION}T00:00:00Z", "2026-01-06T00:00:00Z")) > 0
