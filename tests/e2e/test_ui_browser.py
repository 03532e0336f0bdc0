"""End to end through the real Dagster UI: `dagster dev` on loopback, headless Debian Chromium.

The test starts everything itself: a sandbox upstream (authenticating every endpoint the
way its profile does) on a free port, the shipped profiles re-pointed at it, a code
location file that calls `build_definitions` with secrets from a mounted-secrets folder, a
temp DAGSTER_HOME and `dagster dev` on a free loopback port. Then, as an on-call engineer
would: the connector assets are in the catalog with their partitions, one partition is
materialized from the asset page (Materialize…, pick the partition, Launch), its
checkpoint, row count and hashes show on the partition, both blocking checks show their
verdicts, and a screenshot lands in test-artifacts/. A range backfill is launched through
the GraphQL client meanwhile (the backfill daemon ticks every 30 s) and must finish as one
run covering the three windows.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import TimeWindowPartitionsDefinition
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Page, expect, sync_playwright

from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.integration.checks import CHECK_NAMES
from chartly_dagster.sandbox import run_sandbox
from tests.support.paths import REPO
from tests.support.sandbox import copy_profiles, sandbox_config
from tests.support.secrets import SECRETS, write_secrets
from tests.support.ui import (
    CHROMIUM_ARGS,
    DagsterDev,
    GiveUp,
    require_chromium,
    run_dagster_dev,
    wait_for,
    write_code_location,
    write_dagster_home,
)

# dagster-graphql's client calls gql with arguments gql has deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using variable_values and operation_name:DeprecationWarning")

ARTIFACTS = REPO / "test-artifacts"
ORDERS = ("tenant-demo", "proj-sales", "orders")
INVOICES = ("tenant-demo", "proj-sales", "invoices")
UI_PARTITION = "2026-02-03"
BACKFILL_RANGE = ["2026-02-04", "2026-02-05", "2026-02-06"]
UI_TIMEOUT_MS = 20_000
BACKFILL_TIMEOUT_S = 80  # two backfill-daemon ticks (30 s apart) plus the run itself

LAUNCH_BACKFILL = """
mutation LaunchRange($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status numPartitions partitionNames
      runs(limit: 20) { runId status tags { key value } }
    }
    ... on PythonError { message }
  }
}"""
MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}"""
RUNS = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def _path(key: tuple[str, ...]) -> str:
    return "/".join(key)


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def _graphql(client: DagsterGraphQLClient, query: str, **variables: Any) -> dict[str, Any]:
    # The client has no method for backfills or asset reads; `_execute` is its one way to
    # send any other operation (with its own transport, timeouts and error wrapping).
    return client._execute(query, variables)


def _launch_range_backfill(client: DagsterGraphQLClient) -> str:
    result = _graphql(client, LAUNCH_BACKFILL, params={
        "partitionNames": BACKFILL_RANGE,
        "assetSelection": [{"path": list(INVOICES)}],
        "title": "ui test: invoices range",
    })["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return str(result["backfillId"])


def _wait_for_backfill(client: DagsterGraphQLClient, backfill_id: str, deadline: float,
                       dev: DagsterDev) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        backfill = _graphql(client, BACKFILL_STATUS, id=backfill_id)[
            "partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        return None if backfill["status"] in ("REQUESTED", "CANCELING") else backfill

    return wait_for(f"backfill {backfill_id} to finish", finished,
                    timeout=max(1.0, deadline - time.monotonic()), interval=1.0,
                    diagnostics=dev.log_tail)


def _materialization(client: DagsterGraphQLClient, key: tuple[str, ...],
                     partition: str) -> dict[str, Any]:
    asset = _graphql(client, MATERIALIZATIONS, key={"path": list(key)},
                     partitions=[partition])["assetOrError"]
    records = asset["assetMaterializations"]
    assert records, f"{_path(key)} {partition} has no materialization"
    entries = records[0]["metadataEntries"]
    values = {e["label"]: e.get("intValue", e.get("text", e.get("jsonString")))
              for e in entries}
    return {"run_id": records[0]["runId"], "metadata": values}


def _open(page: Page, url: str, ready_text: str | re.Pattern[str]) -> None:
    """Navigate and wait for content (never just the port): the app renders client-side."""
    page.goto(url)
    expect(page.get_by_text(ready_text).first).to_be_visible()


def _metadata_value(page: Page, label: str) -> Any:
    """The value cell of a metadata table row (label cell, value cell)."""
    row = page.get_by_role("row").filter(has=page.get_by_text(label, exact=True)).first
    return row.get_by_role("cell").nth(1)


def _expected_partition_counts(profiles: Path) -> dict[str, int]:
    """Partitions per connector asset as of now, from the same definitions dagster dev loads."""
    defs = build_definitions(profiles, env="dev")
    counts = {}
    for asset_def in defs.assets or []:
        spec = next(iter(asset_def.specs))
        assert isinstance(spec.partitions_def, TimeWindowPartitionsDefinition)
        counts[spec.key.to_user_string()] = len(spec.partitions_def.get_partition_keys())
    return counts


def _check_catalog(page: Page, dev: DagsterDev, counts: dict[str, int]) -> None:
    page.goto(f"{dev.url}/assets")
    for key, count in counts.items():
        link = page.locator(f'a[href="/assets/{key}"], a[href^="/assets/{key}?"]').first
        expect(link, f"{key} in the catalog").to_be_visible()
        row = link.locator("xpath=ancestor::*[contains(., ' partitions')][1]")
        # A partition boundary can pass between counting here and rendering there.
        expect(row.get_by_text(re.compile(r"^[\d,]+ partitions$")),
               f"{key} partition count").to_have_text(
            re.compile(rf"^({count:,}|{count + 1:,}) partitions$"))


def _materialize_from_ui(page: Page, dev: DagsterDev) -> None:
    asset_url = f"{dev.url}/assets/{_path(ORDERS)}?view=partitions"
    _open(page, asset_url, re.compile(r"Missing \(\d"))
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.locator(".bp5-dialog, [role=dialog]").filter(
        has_text="Launch runs to materialize").last
    expect(dialog).to_be_visible()
    show_all = dialog.get_by_text("Show all partitions")  # the dialog starts at 90 days
    if show_all.count():
        show_all.click()
    selection = dialog.locator("input[type=text]").first
    selection.fill(UI_PARTITION)
    selection.press("Enter")
    expect(dialog).to_contain_text("1 partition")
    dialog.get_by_role("button", name="Launch 1 run").click()
    expect(page.get_by_text("Launched run").first).to_be_visible()


def _wait_for_partition_page(page: Page, dev: DagsterDev,
                             client: DagsterGraphQLClient) -> None:
    """Reload the partition's page until its materialization (run through the queue) shows."""
    url = f"{dev.url}/assets/{_path(ORDERS)}?view=partitions&partition={UI_PARTITION}"

    def shown() -> bool:
        runs = _graphql(client, RUNS, tags=[{"key": "dagster/partition",
                                             "value": UI_PARTITION}])["runsOrError"]["results"]
        failed = [r["runId"] for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        if failed:
            raise GiveUp(f"the run launched from the UI failed: {failed}{dev.log_tail()}")
        page.goto(url)
        try:
            expect(page.get_by_text("dagster/row_count", exact=True).first).to_be_visible(
                timeout=4_000)
        except AssertionError:
            return False
        return True

    wait_for(f"{UI_PARTITION}'s materialization on its partition page", shown, timeout=60,
             interval=0.5, diagnostics=dev.log_tail)


def _check_partition_metadata(page: Page, recorded: dict[str, Any]) -> None:
    meta = recorded["metadata"]
    rows = meta[PartitionMetadata.ROW_COUNT_KEY]
    assert isinstance(rows, int) and rows > 0, meta
    expect(_metadata_value(page, PartitionMetadata.ROW_COUNT_KEY)).to_have_text(
        re.compile(rf"^\s*({rows}|{rows:,})\s*$"))
    for label in map(PartitionMetadata.key, ("content_hash", "plan_hash", "resolved_hash")):
        assert str(meta[label]).startswith("sha256:"), (label, meta[label])
        expect(_metadata_value(page, label)).to_have_text(str(meta[label]))
    checkpoint = json.loads(meta[PartitionMetadata.key("checkpoint")])
    assert checkpoint["scope"]["partition"] == UI_PARTITION, checkpoint
    checkpoint_row = _metadata_value(page, PartitionMetadata.key("checkpoint"))
    expect(checkpoint_row).to_contain_text(f'"checkpoint_type": "{checkpoint["checkpoint_type"]}"')
    expect(checkpoint_row).to_contain_text(f'"watermark": "{checkpoint["payload"]["watermark"]}"')
    expect(page.get_by_text(recorded["run_id"][:8]).first).to_be_visible()


def _check_results(page: Page, dev: DagsterDev) -> None:
    base = f"{dev.url}/assets/{_path(ORDERS)}?view=checks"
    _open(page, base, re.compile(r"Checks \(3\)"))
    for name in CHECK_NAMES:
        _open(page, f"{base}&checkDetail={name}", "Latest execution")
        expect(page.get_by_text("Evaluation result").first).to_be_visible()
        # The verdict of the latest execution, and that it covered the one partition.
        expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
        expect(_metadata_value(page, "partitions_checked")).to_have_text("1")
        expect(_metadata_value(page, "partitions_failed")).to_have_text("0")


def test_operate_connector_assets_from_the_dagster_ui(tmp_path: Path) -> None:
    chromium = require_chromium()
    started = time.monotonic()
    timings: dict[str, float] = {}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ui-failure.png").unlink(missing_ok=True)
    with run_sandbox(sandbox_config()) as sandbox:
        profiles = copy_profiles(tmp_path / "profiles", sandbox.port)
        secrets = write_secrets(tmp_path / "secrets", SECRETS)
        workspace = write_code_location(tmp_path, profiles)
        home = write_dagster_home(tmp_path / "dagster_home")
        counts = _expected_partition_counts(profiles)
        assert {_path(ORDERS), _path(INVOICES)} <= set(counts), counts
        with run_dagster_dev(workspace, home, {"CHARTLY_SECRETS_DIR": str(secrets)},
                             tmp_path / "dagster-dev.log") as dev:
            timings["dagster dev loaded"] = time.monotonic() - started
            client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port, timeout=30)
            # Launched first: the backfill daemon only looks every 30 s, so the UI part
            # runs while it waits.
            backfill_id = _launch_range_backfill(client)
            # A fresh instance greets the first visit on localhost with a "Join the Dagster
            # community" popup that can open over any dialog; mark it seen, as its Skip
            # button would, before the browser opens.
            assert _graphql(client, "mutation { setNuxSeen }")["setNuxSeen"] is True
            backfill_deadline = time.monotonic() + BACKFILL_TIMEOUT_S

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=30_000)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.set_default_timeout(UI_TIMEOUT_MS)
                    expect.set_options(timeout=UI_TIMEOUT_MS)
                    try:
                        _check_catalog(page, dev, counts)
                        _materialize_from_ui(page, dev)
                        _wait_for_partition_page(page, dev, client)
                        timings["partition materialized from the UI"] = (
                            time.monotonic() - started)
                        recorded = _materialization(client, ORDERS, UI_PARTITION)
                        _check_partition_metadata(page, recorded)
                        page.screenshot(path=str(ARTIFACTS / "ui-asset-page.png"))
                        _check_results(page, dev)
                        page.screenshot(path=str(ARTIFACTS / "ui-asset-checks.png"))
                    except Exception:
                        page.screenshot(path=str(ARTIFACTS / "ui-failure.png"), full_page=True)
                        raise
                finally:
                    browser.close()
            timings["UI part done"] = time.monotonic() - started

            # The run came from the UI, for exactly the partition picked there.
            runs = _graphql(client, RUNS, tags=[{"key": "dagster/partition",
                                                 "value": UI_PARTITION}])
            ui_runs = runs["runsOrError"]["results"]
            assert len(ui_runs) == 1, ui_runs
            assert ui_runs[0]["runId"] == recorded["run_id"]
            assert ui_runs[0]["status"] == "SUCCESS", ui_runs
            assert _tags(ui_runs[0]).get("dagster/from_ui") == "true", ui_runs

            backfill = _wait_for_backfill(client, backfill_id, backfill_deadline, dev)
            timings["backfill finished"] = time.monotonic() - started
            assert backfill["status"] == "COMPLETED_SUCCESS", backfill
            assert backfill["numPartitions"] == len(BACKFILL_RANGE), backfill
            assert len(backfill["runs"]) == 1, backfill["runs"]  # one run for the range
            run = backfill["runs"][0]
            assert run["status"] == "SUCCESS", run
            assert _tags(run).get("dagster/asset_partition_range_start") == BACKFILL_RANGE[0]
            assert _tags(run).get("dagster/asset_partition_range_end") == BACKFILL_RANGE[-1]
            for partition in BACKFILL_RANGE:
                landed = _materialization(client, INVOICES, partition)
                assert landed["run_id"] == run["runId"], (partition, landed["run_id"])
                assert landed["metadata"][PartitionMetadata.ROW_COUNT_KEY] > 0, (partition, landed)
    timings["torn down"] = time.monotonic() - started
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


@pytest.fixture(autouse=True)
def _keep_dagster_log_on_failure(request: pytest.FixtureRequest, tmp_path: Path):
    """Copy the dagster dev log next to the screenshots, so a CI failure can be read."""
    yield
    log = tmp_path / "dagster-dev.log"
    if log.exists():
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "ui-dagster-dev.log")
