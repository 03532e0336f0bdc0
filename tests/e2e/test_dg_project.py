"""A new user's path, end to end: `pip install` into a fresh venv, then the `dg` flow.

`pip install` of this package (a copy of its sources, as an sdist would hold them) next to
create-dagster and dagster-dg-cli, pinned to the tested release by constraints.txt and
served by the package index and pip's cache; then `create-dagster project`, the package
added as a dependency, `dg scaffold defs ... ConnectorProfilesComponent connectors` (the
starter profile pointed at this test's sandbox), `dg check defs`, `dg list defs` and
`dg launch` of one partition, read back from the run's Dagster instance.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance

from chartly_dagster.core.errors import PreconditionFailed
from chartly_dagster.core.starter import starter_profile
from chartly_dagster.integration import PartitionMetadata, build_definitions
from chartly_dagster.sandbox import Sandbox, run_sandbox
from tests.support.paths import REPO

COMPONENT = "chartly_dagster.integration.ConnectorProfilesComponent"
STARTER = AssetKey(["my-tenant", "my-project", "starter"])
PARTITION = "2026-02-01"
# This machine's pip configuration names local package folders that do not hold every
# package; pip says so for each one it skips. Those lines are about the machine, not us.
_MACHINE_NOTICE = re.compile(r"^WARNING: Location 'file://\S+' is ignored")


@dataclass
class FreshVenv:
    root: Path
    bin: Path
    pip_output: str

    def env(self, dagster_home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CHARTLY_", "DAGSTER_", "PYTHON"))}
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
                "VIRTUAL_ENV": str(self.root), "DAGSTER_HOME": str(dagster_home)}


def _copy_sources(target: Path) -> Path:
    """What an sdist holds: pyproject, README and the package (no venv, no build dirs)."""
    target.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "chartly_dagster", target / "chartly_dagster",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    root = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    sources = _copy_sources(root.parent / "src")
    proc = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         str(sources), "create-dagster", "dagster-dg-cli", "-c", str(REPO / "constraints.txt")],
        capture_output=True, text=True, timeout=1200, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return FreshVenv(root, root / "bin", output)


def test_pip_install_is_clean_and_declares_an_spdx_license(fresh_venv: FreshVenv) -> None:
    noise = [line for line in fresh_venv.pip_output.splitlines()
             if re.search(r"warn|deprecat", line, re.IGNORECASE)
             and not _MACHINE_NOTICE.match(line)]
    assert noise == []
    meta = subprocess.run(
        [str(fresh_venv.bin / "python"), "-c",
         "from importlib.metadata import metadata, version; m = metadata('chartly-dagster'); "
         "print(m['License-Expression'], version('dagster'))"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert meta[0] == "Apache-2.0" and meta[1].startswith("1.13.")


@pytest.fixture
def dg_project(fresh_venv: FreshVenv, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str],
                                                                         Sandbox]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    env = fresh_venv.env(home)
    run = _runner(tmp_path, env)
    run("create-dagster", "project", "acme-pipelines", "--no-uv-sync")
    project = tmp_path / "acme-pipelines"
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    # What `uv add chartly-dagster` would do: the package becomes a project dependency.
    pyproject.write_text(text.replace("dependencies = [\n",
                                      'dependencies = [\n    "chartly-dagster",\n', 1),
                         encoding="utf-8")
    run("python", "-m", "pip", "install", "--disable-pip-version-check", "-e", str(project))
    with run_sandbox() as sandbox:
        yield project, env, sandbox


def _runner(cwd: Path, env: dict[str, str]
            ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a command of the fresh venv in `cwd`; by default it must succeed."""
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL, check=False)
        if ok:
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc
    return run


def test_create_dagster_project_scaffold_check_list_and_launch(
        dg_project: tuple[Path, dict[str, str], Sandbox]) -> None:
    project, env, sandbox = dg_project
    dg = _runner(project, env)
    dg("dg", "scaffold", "defs", COMPONENT, "connectors",
       "--json-params", json.dumps({"sandbox_port": sandbox.port}))
    component = project / "src" / "acme_pipelines" / "defs" / "connectors"
    defs_yaml = (component / "defs.yaml").read_text(encoding="utf-8")
    assert defs_yaml.startswith("# Every connector profile under profiles/")
    starter = (component / "profiles" / "starter.yaml").read_text(encoding="utf-8")
    assert starter == starter_profile("starter", "cursor", sandbox_port=sandbox.port)

    checked = dg("dg", "check", "defs")
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = json.loads(dg("dg", "list", "defs", "--json").stdout)
    assert STARTER.to_user_string() in {a["asset_key"] for a in listed["assets"]}
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"{STARTER.to_user_string()}:envelope_valid",
        f"{STARTER.to_user_string()}:deterministic",
        f"{STARTER.to_user_string()}:complete",
        f"{STARTER.to_user_string()}_typed:schema_drift"}  # the typed table's drift check

    dg("dg", "launch", "--assets", STARTER.to_user_string(), "--partition", PARTITION)
    truth = sandbox.ground_truth("/v1/events", f"{PARTITION}T00:00:00Z",
                                 "2026-02-02T00:00:00Z")
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=STARTER, asset_partitions=[PARTITION]), limit=1).records
        assert records, "dg launch recorded no materialization"
        mat = records[0].asset_materialization
        assert mat is not None
        meta = PartitionMetadata.extract(mat.metadata)
        assert meta.records == len(truth) > 0
        uri = meta.uri
        assert Path(uri.removeprefix("file://")).is_file()
        for check in ("envelope_valid", "deterministic", "complete"):
            history = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(STARTER, check), limit=10)
            # The run's result and the partition's own evaluation; nothing left PLANNED.
            assert {(h.partition, h.status.value) for h in history} == {
                (None, "SUCCEEDED"), (PARTITION, "SUCCEEDED")}, check

    (component / "defs.yaml").write_text(defs_yaml.replace("env: dev", "env: staging"),
                                         encoding="utf-8")
    warned = dg("dg", "check", "defs")
    assert "is enabled for env 'staging'" in warned.stdout + warned.stderr
    assert "connector/starter@0.1.0#dev (envs: dev)" in warned.stdout + warned.stderr


def test_a_folder_without_profiles_fails_the_load_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed, match=f"{re.escape(str(tmp_path))}.*holds no "
                                                 "connector profile.*profiles new"):
        build_definitions(tmp_path, env="dev")


def test_an_env_no_profile_enables_warns_naming_folder_env_and_variants(
        tmp_path: Path) -> None:
    (tmp_path / "starter.yaml").write_text(starter_profile("starter", "link"), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"is enabled for env 'staging'.*#dev \(envs: dev\)"):
        defs = build_definitions(tmp_path, env="staging")
    assert not list(defs.assets or [])
