"""A partition and its checks never import pandas.

pyarrow imports pandas the first time `pa.array`, `pa.scalar` or `to_numpy` meets a
value, about 40 MB of resident memory in every step process that never uses pandas
(`chartly_dagster/runtime/arrays.py`). Materializing through Dagster in a fresh process
must leave pandas unloaded: the fetch, the envelope checks, the content hash and the
completeness check all build their arrays from buffers. (The typed table converts decoded
JSON with `pa.array`, so this asserts the path without it.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.sandbox import copy_profiles

CHILD = """
import json, sys
from dagster import materialize
from chartly_dagster.integration import ChartlyResource, StorageConfig, build_definitions

profiles, root = sys.argv[1], sys.argv[2]
defs = build_definitions(profiles, schedules=False, typed=False, resource=ChartlyResource(
    env="dev", storage=StorageConfig(root=root, record_responses=False)))
result = materialize([*defs.assets, *defs.asset_checks], partition_key="2026-01-05",
                     resources=defs.resources, raise_on_error=False)
checks = [e.event_specific_data.passed for e in result.all_events
          if e.event_type_value == "ASSET_CHECK_EVALUATION"]
print(json.dumps({"success": result.success, "checks": checks,
                  "pandas": sorted(m for m in sys.modules if m.split(".")[0] == "pandas")}))
"""


def test_a_partition_and_its_checks_leave_pandas_unloaded(sandbox, secrets_env: dict,
                                                          tmp_path: Path) -> None:
    profiles = copy_profiles(tmp_path / "profiles", sandbox.port)
    for path in profiles.rglob("*.yaml"):
        if path.name != "orders.yaml":
            path.unlink()
    done = subprocess.run([sys.executable, "-c", CHILD, str(profiles), str(tmp_path / "data")],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["success"] and outcome["checks"] and all(outcome["checks"]), outcome
    assert outcome["pandas"] == [], "pandas was imported"
    assert list((tmp_path / "data").rglob("2026-01-05.parquet"))
