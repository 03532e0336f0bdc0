"""`ConnectorProfilesComponent` the way a dg project uses it.

A temporary dg project (pyproject `[tool.dg]`, `src/<module>/defs/`) holds a `defs.yaml`
naming the component by its registered type; dagster's own loader builds it. The `dg`
CLI finds the component through the `dagster_dg_cli.registry_modules` entry point,
scaffolds it and lists what the project defines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetSpec,
    DagsterInstance,
    Definitions,
    load_from_defs_folder,
    materialize,
)

from chartly_dagster.integration import (
    ChartlyResource,
    ConnectorProfilesComponent,
    ConnectorProfileTranslatorData,
    PartitionMetadata,
    build_definitions,
)
from chartly_dagster.sandbox import run_sandbox
from tests.support.sandbox import copy_profiles, sandbox_config
from tests.support.secrets import write_secrets
from tests.support.shipped import ORDERS

COMPONENT_TYPE = "chartly_dagster.integration.ConnectorProfilesComponent"
CONNECTORS = {"orders", "invoices", "sales-events", "sales-feed", "metrics", "tickets"}
#: every asset name the component builds: connectors and their typed assets
ASSET_NAMES = CONNECTORS | {f"{c}_typed" for c in CONNECTORS}
DG = str(Path(sys.executable).parent / "dg")


class FlatConnectorProfiles(ConnectorProfilesComponent):
    """A project's subclass: every connector under `raw/<connector>` in one group."""

    def get_asset_spec(self, data: ConnectorProfileTranslatorData) -> AssetSpec:
        return super().get_asset_spec(data).replace_attributes(
            key=AssetKey(["raw", data.resolved.connector]), group_name="raw")


def _dg_project(root: Path) -> tuple[str, Path]:
    """What `dg scaffold project` lays out: pyproject with [tool.dg], src/<module>/defs/."""
    module = f"chartly_proj_{uuid.uuid4().hex[:8]}"
    package = root / "src" / module
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "defs" / "__init__.py").write_text("", encoding="utf-8")
    (package / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\n"
        "def defs() -> dg.Definitions:\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n",
        encoding="utf-8")
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{module}"\nversion = "0.0.0"\n\n[tool.dg]\n'
        f'directory_type = "project"\n\n[tool.dg.project]\nroot_module = "{module}"\n',
        encoding="utf-8")
    return module, package / "defs"


def _write_defs_yaml(folder: Path, component_type: str, attributes: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(
        yaml.safe_dump({"type": component_type, "attributes": attributes}, sort_keys=False),
        encoding="utf-8")


def _load(project: Path, monkeypatch: pytest.MonkeyPatch) -> Definitions:
    monkeypatch.syspath_prepend(str(project / "src"))
    return load_from_defs_folder(path_within_project=project)


def test_defs_yaml_loads_the_same_definitions_as_build_definitions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        dagster_instance: DagsterInstance) -> None:
    for name in [n for n in os.environ if n.startswith("CHARTLY_SECRET_")]:
        monkeypatch.delenv(name)  # only the mounted files may supply credentials
    monkeypatch.setenv("CHARTLY_COMPONENT_SECRETS_DIR", str(write_secrets(tmp_path / "sec")))
    project = tmp_path / "project"
    _, defs_dir = _dg_project(project)
    # This sandbox checks each endpoint's credential, so the materialization below only
    # succeeds if the component's secrets_dir_env_var reached the file provider.
    with run_sandbox(sandbox_config()) as sandbox:
        component_dir = defs_dir / "connectors"
        copy_profiles(component_dir / "profiles", sandbox.port)
        _write_defs_yaml(component_dir, COMPONENT_TYPE, {
            "profiles_dir": "profiles", "env": "dev", "max_partitions_per_run": None,
            "storage_root": str(tmp_path / "lake"),
            "secrets_dir_env_var": "CHARTLY_COMPONENT_SECRETS_DIR", "schedules": False})
        defs = _load(project, monkeypatch)

        graph = defs.resolve_asset_graph()
        keys = graph.get_all_asset_keys()
        assert {k.path[-1] for k in keys} == ASSET_NAMES
        hand_written = build_definitions(component_dir / "profiles", env="dev",
                                         max_partitions_per_run=None, schedules=False)
        assert keys == hand_written.resolve_asset_graph().get_all_asset_keys()
        assert graph.asset_check_keys == hand_written.resolve_asset_graph().asset_check_keys
        for key in keys:
            if key.path[-1] in CONNECTORS:
                assert {c.name for c in graph.asset_check_keys if c.asset_key == key} == {
                    "envelope_valid", "deterministic", "complete"}
                policy = graph.get(key).backfill_policy
                assert policy is not None and policy.max_partitions_per_run is None
        assert {j.name for j in defs.jobs or []} >= {
            "tenant_demo__proj_sales", "tenant_demo__proj_ops__daily",
            "tenant_demo__proj_ops__hourly"}
        assert not list(defs.schedules or [])
        resources = defs.resources or {}
        chartly = resources["chartly"]
        assert isinstance(chartly, ChartlyResource) and chartly.env == "dev"
        assert chartly.secrets.secrets_dir_env_var == "CHARTLY_COMPONENT_SECRETS_DIR"
        assert chartly.storage.root == str(tmp_path / "lake")

        orders = [a for a in defs.assets or [] if ORDERS in getattr(a, "keys", ())]
        result = materialize(orders, instance=dagster_instance, partition_key="2026-01-05",
                             resources=resources)
    assert result.success
    mat = result.asset_materializations_for_node(orders[0].node_def.name)[0]
    meta = PartitionMetadata.extract(mat.metadata)
    assert meta.uri and meta.uri.startswith(f"file://{tmp_path / 'lake'}/")
    assert Path(meta.uri.removeprefix("file://")).is_file()
    assert meta.records == len(sandbox.ground_truth(
        "/v2/orders", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")) > 0


def test_component_subclass_decides_asset_specs(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    _, defs_dir = _dg_project(project)
    component_dir = defs_dir / "connectors"
    copy_profiles(component_dir / "profiles", 8765)
    _write_defs_yaml(component_dir, f"{__name__}.FlatConnectorProfiles", {"schedules": False})
    keys = _load(project, monkeypatch).resolve_asset_graph().get_all_asset_keys()
    assert keys == {AssetKey(["raw", c]) for c in ASSET_NAMES}


def test_yaml_translation_sets_keys_groups_and_tags_without_a_subclass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    _, defs_dir = _dg_project(project)
    component_dir = defs_dir / "connectors"
    copy_profiles(component_dir / "profiles", 8765)
    _write_defs_yaml(component_dir, COMPONENT_TYPE, {"schedules": False, "translation": {
        "key": "raw/{{ tenant }}/{{ connector }}", "group_name": "raw_{{ env }}",
        "tags": {"team": "{{ project }}"}}})
    graph = _load(project, monkeypatch).resolve_asset_graph()
    orders = AssetKey(["raw", "tenant-demo", "orders"])
    assert graph.get_all_asset_keys() == {AssetKey(["raw", "tenant-demo", c])
                                          for c in ASSET_NAMES}
    spec = graph.get(orders)
    assert spec.group_name == "raw_dev"
    # Tags merge into the translator's (env, connector, ...), they do not replace them.
    assert spec.tags["team"] == "proj-sales" and spec.tags["chartly/connector"] == "orders"
    assert {k.name for k in graph.asset_check_keys if k.asset_key == orders} == {
        "envelope_valid", "deterministic", "complete"}
    # The typed asset follows its connector's translated key and group.
    assert graph.get(AssetKey(["raw", "tenant-demo", "orders_typed"])).group_name == "raw_dev"


def test_typed_false_builds_only_the_connector_assets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    _, defs_dir = _dg_project(project)
    component_dir = defs_dir / "connectors"
    copy_profiles(component_dir / "profiles", 8765)
    _write_defs_yaml(component_dir, COMPONENT_TYPE, {"schedules": False, "typed": False})
    graph = _load(project, monkeypatch).resolve_asset_graph()
    assert {k.path[-1] for k in graph.get_all_asset_keys()} == CONNECTORS
    assert {k.name for k in graph.asset_check_keys} == {"envelope_valid", "deterministic",
                                                        "complete"}


def test_dg_cli_finds_scaffolds_and_lists_the_component(tmp_path: Path) -> None:
    registered = {ep.name: ep.value for ep in entry_points(
        group="dagster_dg_cli.registry_modules")}
    assert registered.get("chartly_dagster") == "chartly_dagster.integration"
    assert ConnectorProfilesComponent.get_model_cls().model_json_schema()["properties"].keys() \
        >= {"profiles_dir", "env", "max_partitions_per_run", "secrets_dir_env_var"}

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    project = tmp_path / "project"
    module, defs_dir = _dg_project(project)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(project / "src")}

    def dg(*args: str) -> str:
        proc = subprocess.run([DG, *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc.stdout

    listed = json.loads(dg("list", "components", "--json"))
    assert COMPONENT_TYPE in {item["key"] for item in listed["items"]}

    dg("scaffold", "defs", COMPONENT_TYPE, "connectors")
    component_dir = defs_dir / "connectors"
    scaffolded = yaml.safe_load((component_dir / "defs.yaml").read_text(encoding="utf-8"))
    assert scaffolded == {"type": COMPONENT_TYPE,
                          "attributes": {"profiles_dir": "profiles", "env": "dev"}}
    assert (component_dir / "profiles" / "starter.yaml").is_file()

    shutil.rmtree(component_dir / "profiles")
    copy_profiles(component_dir / "profiles", 8765)
    listed_defs = json.loads(dg("list", "defs", "--json"))
    assets = {a["asset_key"]: a for a in listed_defs["assets"]}
    assert ORDERS.to_user_string() in assets
    type_line = (component_dir / "defs.yaml").read_text(encoding="utf-8").splitlines().index(
        f"type: {COMPONENT_TYPE}") + 1  # below the scaffolded comment block
    assert assets[ORDERS.to_user_string()]["source"] == (
        f"src/{module}/defs/connectors/defs.yaml:{type_line}")
    assert {a.rsplit("/", 1)[-1] for a in assets} == ASSET_NAMES
    checks = {c["key"] for c in listed_defs["asset_checks"]}
    assert {f"{ORDERS.to_user_string()}:envelope_valid",
            f"{ORDERS.to_user_string()}:deterministic"} <= checks
    assert len(checks) == 4 * len(CONNECTORS) and len(listed_defs["schedules"]) == 6
