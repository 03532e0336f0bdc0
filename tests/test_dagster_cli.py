"""The `dagster` CLI against a code location built by `build_definitions`.

One `dagster asset materialize --partition-range` invocation (single-run backfill policy)
into a temporary DAGSTER_HOME, secrets from a mounted-secrets folder named by an
environment variable; then the instance is opened from that home and every partition's
metadata and checkpoint is read back.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from chartly_dagster.integration import metadata as md
from chartly_dagster.sandbox import Sandbox, run_sandbox
from tests.fixtures_profiles import SECRETS, copy_profiles, sandbox_config

ORDERS = AssetKey(["tenant-demo", "proj-sales", "orders"])
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
CODE_LOCATION = '''\
from dagster import EnvVar

from chartly_dagster.integration import (
    ChartlyEgressResource,
    ChartlySecretsResource,
    SecretProviderName,
    build_definitions,
)

defs = build_definitions(
    {profiles!r}, env="dev", max_partitions_per_run=None, schedules=False,
    secrets=ChartlySecretsResource(providers=[SecretProviderName.FILE],
                                   secrets_dir=EnvVar("CHARTLY_CLI_TEST_SECRETS_DIR")),
    egress=ChartlyEgressResource(env="dev"),
)
'''


def _mount_secrets(folder: Path) -> Path:
    for (name, key), value in SECRETS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / key).write_text(value + "\n", encoding="utf-8")
    return folder


def _partition_meta(instance: DagsterInstance, partition: str) -> dict[str, Any]:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ORDERS, asset_partitions=[partition]), limit=1).records
    assert records, f"no materialization stored for {partition}"
    mat = records[0].asset_materialization
    assert mat is not None and mat.partition == partition
    return {k: md.raw_value(v) for k, v in mat.metadata.items()}


def test_cli_partition_range_is_one_run_with_per_partition_metadata(tmp_path: Path) -> None:
    # This sandbox checks each endpoint's credential, so a secret that did not come
    # through the mounted-secrets folder fails the run with a 401.
    with run_sandbox(sandbox_config()) as sandbox:
        home, metas = _materialize_range(sandbox, tmp_path)
    _assert_per_partition(sandbox, home, metas)


def _materialize_range(sandbox: Sandbox, tmp_path: Path
                       ) -> tuple[Path, dict[str, dict[str, Any]]]:
    profiles = copy_profiles(tmp_path / "profiles", sandbox.port)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    code = tmp_path / "code_location.py"
    code.write_text(CODE_LOCATION.format(profiles=str(profiles)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTLY_SECRET_")}
    env.update(DAGSTER_HOME=str(home),
               CHARTLY_CLI_TEST_SECRETS_DIR=str(_mount_secrets(tmp_path / "secrets")))

    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
         "-f", str(code), "--select", ORDERS.to_user_string(),
         "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert not any(value in output for value in SECRETS.values())
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 1 and runs[0].dagster_run.is_success
        return home, {day: _partition_meta(instance, day) for day in DAYS}


def _assert_per_partition(sandbox: Sandbox, home: Path,
                          metas: dict[str, dict[str, Any]]) -> None:
    # Two pages a day, each sent once: no 401 (the file secrets were used), no retries.
    assert [path for _, path, _ in sandbox.request_log] == ["/v2/orders"] * 2 * len(DAYS)
    for day, meta in metas.items():
        end = f"{day[:-2]}{int(day[-2:]) + 1:02d}T00:00:00Z"
        truth = sandbox.ground_truth("/v2/orders", f"{day}T00:00:00Z", end)
        assert meta[md.RECORDS] == meta[md.ROW_COUNT] == len(truth) > 0
        assert meta[md.WINDOW_START] == f"{day}T00:00:00Z"
        assert meta[md.URI] == (
            f"file://{home}/chartly/data/tenant-demo/proj-sales/orders/{day}.parquet")
        assert Path(meta[md.URI].removeprefix("file://")).is_file()
        checkpoint = meta[md.CHECKPOINT]
        assert checkpoint["scope"] == {"tenant": "tenant-demo", "project": "proj-sales",
                                       "connector": "orders", "partition": day}
        assert checkpoint["checkpoint_type"] and checkpoint["payload"]
    assert len({m[md.CONTENT_HASH] for m in metas.values()}) == len(DAYS)
    # Windows ran in order inside the one run: each continues from the previous watermark.
    for before, after in itertools.pairwise(DAYS):
        assert metas[after][md.PREVIOUS_WATERMARK] == metas[before][md.WATERMARK]
