"""Typed assets through Dagster: definitions metadata, a range run against the sandbox,
declared-type errors that block, inferred drift that warns, and the typed files read back
as one dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    materialize,
)

from chartly_dagster.integration import (
    ConnectorProfileTranslator,
    PartitionMetadata,
    TypedPartitionMetadata,
    build_definitions,
)
from chartly_dagster.integration import metadata as md
from chartly_dagster.integration._compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from chartly_dagster.integration.translator import ConnectorProfileTranslatorData
from chartly_dagster.integration.typed import DRIFT_CHECK
from chartly_dagster.runtime.envelope import ENVELOPE_ARROW_SCHEMA
from chartly_dagster.sandbox import Sandbox
from examples.summary import daily_summaries
from tests.support.shipped import SALES_JOB

SALES = ["tenant-demo", "proj-sales"]
ORDERS = AssetKey([*SALES, "orders"])
ORDERS_TYPED = AssetKey([*SALES, "orders_typed"])
FEED = AssetKey([*SALES, "sales-feed"])
FEED_TYPED = AssetKey([*SALES, "sales-feed_typed"])
SUMMARY = AssetKey([*SALES, "daily_summary"])
URI = PartitionMetadata.key("uri")
ROW_COUNT = PartitionMetadata.ROW_COUNT_KEY
COLUMN_SCHEMA = md.DEF_COLUMN_SCHEMA  # the same key on definitions and materializations


def _latest(instance: DagsterInstance, key: AssetKey, partition: str) -> dict[str, Any]:
    from chartly_dagster.integration.checkpoints import last_materialization

    record = last_materialization(instance, key, partition)
    assert record is not None, f"{key.to_user_string()} {partition} was not materialized"
    return record.metadata


def _evaluations(result: Any, key: AssetKey) -> list[Any]:
    """The run-wide check results of `key` (each partition's own evaluation left out)."""
    return [e.event_specific_data for e in result.all_events
            if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            and e.event_specific_data.asset_key == key
            and e.event_specific_data.partition is None]


def _range_run(defs: Definitions, instance: DagsterInstance, first: str, last: str) -> Any:
    return defs.resolve_job_def(SALES_JOB).execute_in_process(
        instance=instance, raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})


def test_schema_is_in_the_definitions_before_any_run(sandbox_profiles: Path) -> None:
    graph = build_definitions(sandbox_profiles, env="dev").resolve_asset_graph()
    envelope = graph.get(ORDERS).metadata[COLUMN_SCHEMA]
    assert [c.name for c in envelope.columns] == ENVELOPE_ARROW_SCHEMA.names
    typed = graph.get(ORDERS_TYPED)
    assert typed.parent_keys == {ORDERS}
    assert typed.partitions_def == graph.get(ORDERS).partitions_def
    columns = {c.name: c for c in typed.metadata[COLUMN_SCHEMA].columns}
    assert list(columns)[:6] == ["event_id", "record_id", "record_type", "occurred_at",
                                 "window_start", "window_end"]
    assert columns["amount"].type == "decimal128(12, 2)"
    assert columns["created_at"].type == "timestamp[us, tz=UTC]"
    assert columns["customer_name"].description == "Buyer name."
    # An inferred connector shows the join columns it will always have.
    inferred = graph.get(FEED_TYPED).metadata[COLUMN_SCHEMA]
    assert [c.name for c in inferred.columns] == list(columns)[:6]
    checks = {(k.asset_key, k.name): graph.get(k) for k in graph.asset_check_keys
              if k.name == DRIFT_CHECK}
    assert checks[(ORDERS_TYPED, DRIFT_CHECK)].blocking
    assert not checks[(FEED_TYPED, DRIFT_CHECK)].blocking
    # The profile's schedule job types what it fetches.
    job = build_definitions(sandbox_profiles, env="dev").resolve_job_def(
        "tenant_demo__proj_sales__orders_job")
    assert job.asset_layer.selected_asset_keys == {ORDERS, ORDERS_TYPED}


def test_typed_keys_come_from_the_translator(sandbox_profiles: Path) -> None:
    class Layered(ConnectorProfileTranslator):
        def get_typed_asset_key(self, data: ConnectorProfileTranslatorData,
                                connector_key: AssetKey) -> AssetKey:
            return connector_key.with_prefix("typed")

    keys = build_definitions(sandbox_profiles, env="dev", translator=Layered()
                             ).resolve_asset_graph().get_all_asset_keys()
    assert AssetKey(["typed", *ORDERS.path]) in keys and ORDERS_TYPED not in keys
    plain = build_definitions(sandbox_profiles, env="dev", typed=False)
    assert ORDERS_TYPED not in plain.resolve_asset_graph().get_all_asset_keys()


def test_range_run_types_every_partition_and_reads_back_as_one_dataset(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    defs = build_definitions(sandbox_profiles, env="dev", downstream=daily_summaries)
    result = _range_run(defs, dagster_instance, "2026-01-01", "2026-01-03")
    assert result.success
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    for key, raw_key in ((ORDERS_TYPED, ORDERS), (FEED_TYPED, FEED)):
        for day in days:
            typed, raw = _latest(dagster_instance, key, day), _latest(dagster_instance,
                                                                    raw_key, day)
            assert typed[ROW_COUNT] == raw[md.RECORDS] > 0
            assert typed[URI].endswith(f"/window={day}T00:00:00Z/part-0.parquet")
            assert typed["chartly/conversion_errors"] == 0
            schema = typed[COLUMN_SCHEMA]
            written = pq.read_schema(typed[URI])
            assert [c.name for c in schema.columns] == written.names
    feed = TypedPartitionMetadata.extract(_latest(dagster_instance, FEED_TYPED, "2026-01-02"))
    assert feed.columns == "inferred"
    assert feed.observed == {
        "amount": "float64", "currency": "string", "customer__id": "string",
        "customer__name": "string", "id": "string", "raw_occurred_at": "string",
        "text": "string"}
    (drift,) = _evaluations(result, FEED_TYPED)
    assert drift.passed and drift.severity == AssetCheckSeverity.WARN
    verdicts = md.raw_value(drift.metadata["verdicts"])
    assert verdicts["2026-01-02"] == {"ok": True, "previous_partition": "2026-01-01",
                                      "added": [], "removed": [], "retyped": []}
    (declared,) = _evaluations(result, ORDERS_TYPED)
    assert declared.passed and md.raw_value(declared.metadata["partitions_checked"]) == 3
    # The summary reads the typed assets: every typed row of the day is counted.
    summary = _latest(dagster_instance, SUMMARY, "2026-01-02")
    assert summary["records"] == sum(
        _latest(dagster_instance, AssetKey([*SALES, f"{name}_typed"]), "2026-01-02")[
            ROW_COUNT] for name in ("orders", "invoices", "sales-events", "sales-feed"))

    # Read a date range of the typed orders as one table (the README's example).
    root = Path(_latest(dagster_instance, ORDERS_TYPED, days[0])[URI]).parents[1]
    orders = ds.dataset(root, partitioning="hive")
    two_days = orders.to_table(filter=(ds.field("window") >= "2026-01-02")
                               & (ds.field("window") < "2026-01-04"))
    assert two_days.num_rows == sum(_latest(dagster_instance, ORDERS, d)[md.RECORDS]
                                    for d in days[1:])
    truth = sandbox.ground_truth("/v2/orders", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")
    by_id = {r["order_id"]: r for r in truth}
    for row in two_days.slice(0, 50).to_pylist():
        if row["window"].startswith("2026-01-02"):
            source = by_id[row["order_id"]]
            assert row["currency"] == source["currency"]
            assert row["customer_id"] == source["customer"]["id"]
            assert float(row["amount"]) == source["amount"]
            assert int(row["created_at"].timestamp()) == source["created"]


def _declare(profiles: Path, extra_column: dict[str, Any]) -> None:
    path = profiles / "sales" / "orders.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["spec"]["records"]["columns"].append(extra_column)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_declared_type_errors_fail_the_blocking_check_with_row_samples(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    _declare(sandbox_profiles, {"name": "currency_code", "source": "currency", "type": "int64",
                                "description": "wrongly declared: currencies are text"})
    defs = build_definitions(sandbox_profiles, env="dev", downstream=daily_summaries)
    result = _range_run(defs, dagster_instance, "2026-01-05", "2026-01-06")
    assert not result.success
    (drift,) = _evaluations(result, ORDERS_TYPED)
    assert not drift.passed and drift.severity == AssetCheckSeverity.ERROR
    meta = {k: md.raw_value(v) for k, v in drift.metadata.items()}
    assert meta["failing_partitions"] == ["2026-01-05", "2026-01-06"]
    (finding,) = meta["verdicts"]["2026-01-05"]["findings"]
    rows = _latest(dagster_instance, ORDERS_TYPED, "2026-01-05")[ROW_COUNT]
    assert finding["column"] == "currency_code" and finding["errors"] == rows
    sample = finding["samples"][0]
    assert sample["error"] == "expected int64, got string"
    typed_file = pq.read_table(_latest(dagster_instance, ORDERS_TYPED, "2026-01-05")[URI])
    assert sample["event_id"] == typed_file.column("event_id")[0].as_py()
    assert orjson.loads(sample["value"]) in {"EUR", "USD", "GBP", "CHF", "SEK", "JPY", "PLN",
                                             "NOK"}
    # Blocking: the summary downstream of the typed assets is skipped for the whole run.
    assert not [e for e in result.all_events
                if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
                and e.asset_key == SUMMARY]


def _drifted_envelope(source_uri: str, target: Path) -> str:
    """The same envelopes with each record's fields changed: text removed, priority added,
    amount retyped to text (raw_sha256 is not re-hashed: only the typed layer reads this)."""
    table = pq.read_table(source_uri.removeprefix("file://"))
    raws = []
    for text in table.column("raw").to_pylist():
        record = orjson.loads(text)
        record.pop("text")
        record["priority"] = 1
        record["amount"] = str(record["amount"])
        raws.append(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode())
    index = table.schema.get_field_index("raw")
    pq.write_table(table.set_column(index, table.schema.field("raw"), pa.array(raws)), target)
    return target.as_uri()


def test_inferred_drift_between_partitions_warns_naming_fields(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance, tmp_path: Path) -> None:
    defs = build_definitions(sandbox_profiles, env="dev")
    assets = [a for a in defs.assets or [] if set(a.keys) & {FEED, FEED_TYPED}]
    checks = [c for c in defs.asset_checks or [] if {k.asset_key for k in c.check_keys}
              & {FEED, FEED_TYPED}]
    first = materialize([*assets, *checks], instance=dagster_instance, partition_key="2026-01-08",
                        resources=defs.resources)
    assert first.success
    # The next window's upstream file arrives with other fields (recorded as its
    # materialization), then only the typed asset and its drift check run.
    upstream = _latest(dagster_instance, FEED, "2026-01-08")[URI]
    drifted = _drifted_envelope(upstream, tmp_path / "drifted.parquet")
    dagster_instance.report_runless_asset_event(AssetMaterialization(
        FEED, partition="2026-01-09", metadata={URI: drifted}))
    second = materialize([*assets, *checks], instance=dagster_instance,
                         partition_key="2026-01-09", resources=defs.resources,
                         selection=AssetSelection.assets(FEED_TYPED).without_checks()
                         | AssetSelection.checks_for_assets(FEED_TYPED))
    assert second.success  # WARN does not fail the run
    (drift,) = _evaluations(second, FEED_TYPED)
    assert not drift.passed and drift.severity == AssetCheckSeverity.WARN
    verdict = md.raw_value(drift.metadata["verdicts"])["2026-01-09"]
    assert verdict == {"ok": False, "previous_partition": "2026-01-08", "added": ["priority"],
                       "removed": ["text"],
                       "retyped": [{"column": "amount", "from": "float64", "to": "string"}]}


def test_bad_raw_data_never_reaches_the_typed_asset(
        sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        dagster_instance: DagsterInstance) -> None:
    defs = build_definitions(sandbox_profiles, env="dev")
    assets = [a for a in defs.assets or [] if set(a.keys) & {ORDERS, ORDERS_TYPED}]
    checks = [c for c in defs.asset_checks or [] if {k.asset_key for k in c.check_keys}
              & {ORDERS, ORDERS_TYPED}]

    def checks_then_typed() -> Any:
        return materialize([*assets, *checks], instance=dagster_instance,
                           partition_key="2026-01-11", resources=defs.resources,
                           raise_on_error=False,
                           selection=AssetSelection.checks_for_assets(ORDERS)
                           | AssetSelection.assets(ORDERS_TYPED))

    def typed_materialized(result: Any) -> bool:
        return any(e.event_type == DagsterEventType.ASSET_MATERIALIZATION
                   and e.asset_key == ORDERS_TYPED for e in result.all_events)

    assert materialize([*assets, *checks], instance=dagster_instance,
                       partition_key="2026-01-11", resources=defs.resources,
                       selection=AssetSelection.assets(ORDERS)).success
    path = _latest(dagster_instance, ORDERS, "2026-01-11")[URI].removeprefix("file://")
    table = pq.read_table(path)
    raws = table.column("raw").to_pylist()
    raws[0] = raws[0].replace('"currency"', '"tampered":1,"currency"', 1)  # hash now wrong
    pq.write_table(table.set_column(table.schema.get_field_index("raw"),
                                    table.schema.field("raw"), pa.array(raws)), path)
    blocked = checks_then_typed()
    assert not blocked.success
    assert not next(e for e in _evaluations(blocked, ORDERS)
                    if e.check_name == "envelope_valid").passed
    assert not typed_materialized(blocked)
    # The same run over the untouched file does type it: the check was the gate.
    pq.write_table(table, path)
    passed = checks_then_typed()
    assert passed.success and typed_materialized(passed)
