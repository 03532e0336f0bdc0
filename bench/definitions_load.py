"""How long `build_definitions` takes for N generated profiles (measured, not asserted).

Usage: python bench/definitions_load.py [N]  (default 500). Generates N variants of the
shipped orders profile (distinct connector names, a mix of daily and hourly cadences) in
a temp folder, then times loading and resolving the Definitions.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def generate(folder: Path, count: int) -> None:
    base = yaml.safe_load((ROOT / "profiles" / "sales" / "orders.yaml").read_text())
    for i in range(count):
        doc = {**base, "metadata": {**base["metadata"], "name": f"orders-{i:04d}",
                                    "namespace": f"tenant-bench/proj-{i % 10}"}}
        spec = dict(doc["spec"])
        spec["partitions"] = {"cadence": "hourly" if i % 5 == 0 else "daily",
                              "start": "2025-01-01T00:00:00Z"}
        spec.pop("golden", None)
        doc["spec"] = spec
        doc["variants"] = {"dev": {"spec": {**base["variants"]["dev"]["spec"], "golden": None}}}
        (folder / f"orders-{i:04d}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    started = time.perf_counter()
    from chartly_dagster.integration import build_definitions

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), count)
        built_at = time.perf_counter()
        defs = build_definitions(tmp, env="dev")
        built = time.perf_counter()
        graph = defs.resolve_asset_graph()
        resolved = time.perf_counter()
    print(f"profiles={count} import={imported - started:.2f}s build={built - built_at:.2f}s "
          f"resolve={resolved - built:.2f}s assets={len(graph.get_all_asset_keys())} "
          f"checks={len(list(defs.asset_checks or []))} jobs={len(list(defs.jobs or []))}")


if __name__ == "__main__":
    main()
