"""`make demo` and `make ui`: the shipped profiles through Dagster against a local sandbox.

`demo` starts the sandbox upstream on port 8765 (where the `#dev` variants point),
materializes seven explicit daily windows of every dev profile through the project jobs
(asset, blocking checks, typed asset and its drift check, summary) into `dagster_home/`,
and prints what landed, typed row counts included. `ui` starts
the same sandbox and `dagster dev` on workspace.yaml, so the runs can be inspected and new
partitions materialized from the UI.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    TimeWindow,
    TimeWindowPartitionsDefinition,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from .cli.render import table
from .integration import metadata as md
from .integration.assets import DEFAULT_MAX_PARTITIONS_PER_RUN
from .sandbox import run_sandbox

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_PORT = 8765
# Seven explicit windows (no "now"): the week the golden plans pin starts here.
WEEK = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 8, tzinfo=UTC))
# The sandbox accepts any credential; these demo values live only under DAGSTER_HOME.
# No value may be a word of the output: the log redactor scrubs every secret value, so a
# username of "demo" turned each "tenant-demo" in the run logs into "tenant-[REDACTED]".
DEMO_SECRETS = {("orders-api", "api-key"): "demo-orders-key",
                ("billing-api", "api-key"): "demo-billing-key",
                ("sales-api", "token"): "demo-sales-token",
                ("helpdesk", "username"): "helpdesk-demo-user",
                ("helpdesk", "password"): "demo-password"}

# The run's events are all stored (the UI shows them); only the console echo is quieted.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(ROOT / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    return home


def _write_demo_secrets(home: Path) -> Path:
    """Mounted-secret layout (`<dir>/<name>/<key>`) for the file provider."""
    folder = home / "chartly" / "secrets"
    for (name, key), value in DEMO_SECRETS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / key).write_text(value + "\n", encoding="utf-8")
    os.environ["CHARTLY_SECRETS_DIR"] = str(folder)
    os.environ.setdefault("CHARTLY_ENV", "dev")
    return folder


def _load_code_location() -> Definitions:
    return runpy.run_path(str(ROOT / "definitions.py"))["defs"]


def _chunks(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def run_week(defs: Definitions, instance: DagsterInstance) -> dict[str, dict[str, bool]]:
    """Every project job over the week, in runs of at most the backfill policy's size."""
    checks: dict[str, dict[str, bool]] = {}
    for job_def in defs.jobs or []:
        if job_def.name.endswith("_job"):  # per-profile jobs back the schedules
            continue
        job = defs.resolve_job_def(job_def.name)
        partitions = job.partitions_def
        assert isinstance(partitions, TimeWindowPartitionsDefinition)
        keys = list(partitions.get_partition_keys_in_time_window(TimeWindow(*WEEK)))
        for chunk in _chunks(keys, DEFAULT_MAX_PARTITIONS_PER_RUN):
            print(f"  {job.name}: {chunk[0]} .. {chunk[-1]} ({len(chunk)} windows, one run)")
            result = job.execute_in_process(instance=instance, raise_on_error=False,
                                            run_config=QUIET_RUN_CONFIG, tags={
                ASSET_PARTITION_RANGE_START_TAG: chunk[0],
                ASSET_PARTITION_RANGE_END_TAG: chunk[-1]})
            for event in result.all_events:
                if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                    data = event.event_specific_data
                    checks.setdefault(data.asset_key.to_user_string(), {})[
                        data.check_name] = data.passed
    return checks


def _partition_rows(instance: DagsterInstance, key: AssetKey) -> list[dict[str, Any]]:
    records = instance.fetch_materializations(AssetRecordsFilter(
        asset_key=key), limit=10_000).records
    latest: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first
        mat = record.asset_materialization
        if mat is not None and mat.partition and mat.partition not in latest:
            latest[mat.partition] = {k: md.raw_value(v) for k, v in mat.metadata.items()}
    return [latest[k] for k in sorted(latest)]


def report(defs: Definitions, instance: DagsterInstance,
           checks: dict[str, dict[str, bool]]) -> str:
    rows = []
    for asset_def in defs.assets or []:
        for key in asset_def.keys:
            metas = [m for m in _partition_rows(instance, key) if m.get(md.WINDOW_START, "")
                     and WEEK[0].strftime("%Y-%m-%d") <= m[md.WINDOW_START][:10]
                     < WEEK[1].strftime("%Y-%m-%d")]
            verdicts = checks.get(key.to_user_string(), {})
            check_text = " ".join(f"{name}={'pass' if ok else 'FAIL'}"
                                  for name, ok in sorted(verdicts.items())) or "-"
            last = metas[-1] if metas else {}
            checkpoint = last.get(md.CHECKPOINT) or {}
            rows.append([key.to_user_string(), str(len(metas)),
                         str(sum(int(m.get(md.RECORDS, m.get("records", 0))) for m in metas)),
                         check_text,
                         f"{checkpoint.get('checkpoint_type', '-')} "
                         f"{last.get(md.WATERMARK) or ''}".strip()])
    return table(["asset", "partitions", "rows", "checks", "checkpoint (last window)"], rows)


def demo() -> int:
    home = _home()
    _write_demo_secrets(home)
    defs = _load_code_location()
    instance = DagsterInstance.get()
    print(f"Sandbox upstream on http://127.0.0.1:{SANDBOX_PORT}; DAGSTER_HOME={home}")
    print(f"Materializing [{WEEK[0]:%Y-%m-%d}, {WEEK[1]:%Y-%m-%d}) through Dagster:")
    with run_sandbox(port=SANDBOX_PORT):
        checks = run_week(defs, instance)
    print()
    print(report(defs, instance, checks))
    print("\nOpen the UI on this instance: `make ui`, then http://127.0.0.1:3000 "
          "(assets, checks and runs above; schedules start stopped).")
    failed = any(not ok for verdicts in checks.values() for ok in verdicts.values())
    return 1 if failed else 0


def ui() -> int:
    """Sandbox in this process, `dagster dev` as a child; Ctrl-C stops both."""
    home = _home()
    _write_demo_secrets(home)
    with run_sandbox(port=SANDBOX_PORT):
        print(f"Sandbox upstream on http://127.0.0.1:{SANDBOX_PORT}; DAGSTER_HOME={home}")
        child = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w",
                                  str(ROOT / "workspace.yaml")], cwd=ROOT, env=os.environ)
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl-C is how a user stops the UI: not a failure
            child.terminate()
            child.wait()
            return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return ui() if args[:1] == ["ui"] else demo()


if __name__ == "__main__":
    raise SystemExit(main())
