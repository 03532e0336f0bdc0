"""The `dagster` CLI against the shipped code location, `definitions.py`, as a user runs it.

One `dagster asset materialize -f definitions.py --partition-range` invocation into a
temporary DAGSTER_HOME (the profiles folder re-pointed at this test's sandbox through
`CHARTLY_PROFILES_DIR`); secrets come either only from `CHARTLY_SECRET_<NAME>_<KEY>`
variables with `CHARTLY_SECRETS_DIR` unset, or only from a mounted folder. Then the
instance is opened from that home and every partition's metadata is read back.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetRecordsFilter, DagsterInstance

from chartly_dagster.integration import PartitionMetadata
from chartly_dagster.sandbox import Sandbox, run_sandbox
from tests.support.paths import REPO
from tests.support.sandbox import copy_profiles, sandbox_config
from tests.support.secrets import SECRET_ENV, SECRETS, write_secrets
from tests.support.shipped import ORDERS

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


def _partition_meta(instance: DagsterInstance, partition: str) -> PartitionMetadata:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[partition]), limit=1).records
    assert records, f"no materialization stored for {partition}"
    mat = records[0].asset_materialization
    assert mat is not None and mat.partition == partition
    return PartitionMetadata.extract(mat.metadata)


@pytest.mark.parametrize("secrets_from", ["variables", "mounted-folder"])
def test_shipped_code_location_materializes_a_range_in_one_run(
        tmp_path: Path, secrets_from: str) -> None:
    # This sandbox checks each endpoint's credential: a secret that did not arrive through
    # the chosen provider fails the run with a 401.
    with run_sandbox(sandbox_config()) as sandbox:
        home, metas = _materialize_range(sandbox, tmp_path, secrets_from)
    _assert_per_partition(sandbox, home, metas)


def _environment(tmp_path: Path, home: Path, profiles: Path, secrets_from: str
                 ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHARTLY_SECRET", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), CHARTLY_PROFILES_DIR=str(profiles), CHARTLY_ENV="dev")
    if secrets_from == "variables":  # and no secrets folder variable at all
        env.update(SECRET_ENV)
    else:
        env["CHARTLY_SECRETS_DIR"] = str(write_secrets(tmp_path / "secrets"))
    return env


def _materialize_range(sandbox: Sandbox, tmp_path: Path, secrets_from: str
                       ) -> tuple[Path, dict[str, PartitionMetadata]]:
    profiles = copy_profiles(tmp_path / "profiles", sandbox.port)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
         "-f", "definitions.py", "--select", ORDERS.to_user_string(),
         "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"],
        cwd=REPO, env=_environment(tmp_path, home, profiles, secrets_from),
        capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert not any(value in output for value in SECRETS.values())
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 1 and runs[0].dagster_run.is_success
        return home, {day: _partition_meta(instance, day) for day in DAYS}


def _assert_per_partition(sandbox: Sandbox, home: Path,
                          metas: dict[str, PartitionMetadata]) -> None:
    # Two pages a day, each sent once: no 401 (the secrets were used), no retries.
    assert [path for _, path, _ in sandbox.request_log] == ["/v2/orders"] * 2 * len(DAYS)
    for day, meta in metas.items():
        end = f"{day[:-2]}{int(day[-2:]) + 1:02d}T00:00:00Z"
        truth = sandbox.ground_truth("/v2/orders", f"{day}T00:00:00Z", end)
        assert meta.records == len(truth) > 0
        assert meta.window_start == f"{day}T00:00:00Z"
        assert meta.uri == (
            f"file://{home}/chartly/data/tenant-demo/proj-sales/orders/{day}.parquet")
        assert Path(meta.uri.removeprefix("file://")).is_file()
        checkpoint = meta.checkpoint
        assert checkpoint is not None
        assert checkpoint["scope"] == {"tenant": "tenant-demo", "project": "proj-sales",
                                       "connector": "orders", "partition": day}
        assert checkpoint["checkpoint_type"] and checkpoint["payload"]
    assert len({m.content_hash for m in metas.values()}) == len(DAYS)
    # Windows ran in order inside the one run: each continues from the previous watermark.
    for before, after in itertools.pairwise(DAYS):
        assert metas[after].previous_watermark == metas[before].watermark
