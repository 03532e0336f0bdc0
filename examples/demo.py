"""`make demo` and `make ui`: the shipped profiles through Dagster against a local sandbox.

`demo` starts the sandbox upstream on port 8765 (where the `#dev` variants point),
materializes seven explicit daily windows of every dev profile through the project jobs
(asset, blocking checks, typed asset and its drift check, summary) into `dagster_home/`,
and prints what landed, typed row counts included. `ui` starts the same sandbox and
`dagster dev` on workspace.yaml, so the runs can be inspected and new partitions
materialized from the UI.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
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

from chartly_dagster.cli.render import table
from chartly_dagster.integration import PartitionMetadata
from chartly_dagster.integration._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from chartly_dagster.integration.resources import RESOURCE_KEY
from chartly_dagster.sandbox import run_sandbox

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


def run_week(defs: Definitions, instance: DagsterInstance) -> dict[str, dict[str, bool]]:
    """Every project job over the week, one run per job (a range is one run)."""
    checks: dict[str, dict[str, bool]] = {}
    for job_def in defs.jobs or []:
        if job_def.name.endswith("_job"):  # per-profile jobs back the schedules
            continue
        job = defs.resolve_job_def(job_def.name)
        partitions = job.partitions_def
        assert isinstance(partitions, TimeWindowPartitionsDefinition)
        keys = list(partitions.get_partition_keys_in_time_window(TimeWindow(*WEEK)))
        print(f"  {job.name}: {keys[0]} .. {keys[-1]} ({len(keys)} windows, one run)")
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        run_config=QUIET_RUN_CONFIG, tags={
            ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
        for event in result.all_events:
            if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                data = event.event_specific_data
                checks.setdefault(data.asset_key.to_user_string(), {})[
                    data.check_name] = data.passed
    return checks


def _week_metadata(instance: DagsterInstance, key: AssetKey,
                   partitions_def: TimeWindowPartitionsDefinition) -> list[dict[str, Any]]:
    """The newest materialization's metadata of each of the week's partitions."""
    week = partitions_def.get_partition_keys_in_time_window(TimeWindow(*WEEK))
    records = instance.fetch_materializations(AssetRecordsFilter(
        asset_key=key, asset_partitions=week), limit=10_000).records
    latest: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first
        mat = record.asset_materialization
        if mat is not None and mat.partition and mat.partition not in latest:
            latest[mat.partition] = dict(mat.metadata)
    return [latest[k] for k in sorted(latest)]


def _records(metadata: dict[str, Any]) -> int:
    """Connector and typed partitions carry `chartly/records` (PartitionMetadata,
    TypedPartitionMetadata); the example summary its own `records`."""
    own = metadata.get("records")
    return int(own.value) if own is not None else PartitionMetadata.extract(metadata).records


def report(defs: Definitions, instance: DagsterInstance,
           checks: dict[str, dict[str, bool]]) -> str:
    rows = []
    for asset_def in defs.assets or []:
        partitions_def = asset_def.partitions_def
        assert isinstance(partitions_def, TimeWindowPartitionsDefinition)
        for key in asset_def.keys:
            metas = _week_metadata(instance, key, partitions_def)
            verdicts = checks.get(key.to_user_string(), {})
            check_text = " ".join(f"{name}={'pass' if ok else 'FAIL'}"
                                  for name, ok in sorted(verdicts.items())) or "-"
            last = PartitionMetadata.extract(metas[-1] if metas else {})
            checkpoint = last.checkpoint or {}
            rows.append([key.to_user_string(), str(len(metas)),
                         str(sum(_records(m) for m in metas)), check_text,
                         f"{checkpoint.get('checkpoint_type', '-')} "
                         f"{last.watermark or ''}".strip()])
    return table(["asset", "partitions", "rows", "checks", "checkpoint (last window)"], rows)


def where_the_files_are(defs: Definitions, instance: DagsterInstance) -> str:
    """Where the Parquet files landed (one per window) and a one-liner that opens one."""
    root = (defs.resources or {})[RESOURCE_KEY].storage.destination(instance)
    uris = [PartitionMetadata.extract(metas[-1]).uri for asset_def in defs.assets or []
            for key in asset_def.keys
            if isinstance(asset_def.partitions_def, TimeWindowPartitionsDefinition)
            for metas in [_week_metadata(instance, key, asset_def.partitions_def)] if metas]
    uris = [u for u in uris if u]
    example = uris[0].removeprefix("file://") if uris else f"{root}/<tenant>/<project>/..."
    return (f"\nParquet files, one per window: {root}/<tenant>/<project>/<connector>/"
            f"<window>.parquet\nOpen one: {Path(sys.executable).parent / 'python'} -c "
            f"\"import pyarrow.parquet as pq; print(pq.read_table('{example}')"
            f".to_pandas().head())\"")


@contextlib.contextmanager
def _sandbox() -> Iterator[None]:
    """The sandbox on the port the shipped dev profiles name; a clear exit if it is taken."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_sandbox(port=SANDBOX_PORT))
        except OSError as exc:
            raise SystemExit(
                f"cannot start the sandbox upstream on 127.0.0.1:{SANDBOX_PORT}: "
                f"{exc.strerror or exc}. The shipped dev profiles point at this port; stop "
                "what holds it (another `make demo`, `make ui` or `chartly-tool sandbox "
                "serve`) and run again.") from None
        yield


def demo() -> int:
    home = _home()
    _write_demo_secrets(home)
    defs = _load_code_location()
    instance = DagsterInstance.get()
    with _sandbox():
        print(f"Sandbox upstream on http://127.0.0.1:{SANDBOX_PORT}; DAGSTER_HOME={home}")
        print(f"Materializing [{WEEK[0]:%Y-%m-%d}, {WEEK[1]:%Y-%m-%d}) through Dagster:")
        checks = run_week(defs, instance)
    print()
    print(report(defs, instance, checks))
    print(where_the_files_are(defs, instance))
    print("\nOpen the UI on this instance: `make ui`, then http://127.0.0.1:3000 "
          "(assets, checks and runs above; schedules start stopped).")
    failed = any(not ok for verdicts in checks.values() for ok in verdicts.values())
    return 1 if failed else 0


def ui() -> int:
    """Sandbox in this process, `dagster dev` as a child; Ctrl-C stops both."""
    home = _home()
    _write_demo_secrets(home)
    with _sandbox():
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
