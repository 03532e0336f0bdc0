"""`chartly-tool profiles new`: every starter profile validates, plans, and fetches its window."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from chartly_dagster.cli.main import main
from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.starter import PAGINATION_MODES, starter_profile
from chartly_dagster.sandbox import Sandbox
from chartly_dagster.sandbox.data import ENDPOINTS

WINDOW = ("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {}


@pytest.mark.parametrize("mode", PAGINATION_MODES)
def test_starter_profile_runs_against_the_sandbox(mode: str, sandbox_session: Sandbox,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    profiles = tmp_path / "profiles"
    code, written = _cli(capsys, "profiles", "new", "first", "--pagination", mode,
                         "--namespace", "acme/billing", "--profiles-dir", str(profiles),
                         "--sandbox-port", str(sandbox_session.port))
    assert code == 0, written
    assert written["written"] == str(profiles / "first.yaml")
    text = (profiles / "first.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Connector profile 'first'") and "To point it at your API" in text

    catalog = ProfileCatalog.load(profiles)
    catalog.raise_for_issues()
    refs = {str(r.ref) for r in catalog.resolve_all()}
    assert refs == {"acme/billing::connector/first@0.1.0",
                    "acme/billing::connector/first@0.1.0#dev"}

    code, doc = _cli(capsys, "connector-tester", "run", "--apply", "--env", "dev",
                     "--tenant", "acme", "--project", "billing",
                     "--connector-profile", written["ref"], "--profiles-dir", str(profiles),
                     "--output", str(tmp_path / "out"),
                     "--window-start", WINDOW[0], "--window-end", WINDOW[1])
    assert code == 0, doc.get("validation")
    path = yaml.safe_load(text)["spec"]["request"]["path"]
    truth = sandbox_session.ground_truth(path, *WINDOW)
    assert doc["results"]["outcome"] == "complete"
    assert doc["results"]["records"] == len(truth) > 0
    table = pq.read_table(Path(doc["results"]["output"].removeprefix("file://")),
                          columns=["record_id"])
    id_key = ENDPOINTS[path].id_key
    assert sorted(table.column("record_id").to_pylist()) == sorted(r[id_key] for r in truth)


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mine.yaml"
    target.write_text("# mine\n", encoding="utf-8")
    args = ("profiles", "new", "orders", "--pagination", "offset", "--output", str(target))
    code, doc = _cli(capsys, *args)
    assert code == 3 and "--force" in doc["error"]["message"]
    assert target.read_text(encoding="utf-8") == "# mine\n"
    assert _cli(capsys, *args, "--force")[0] == 0
    assert "mode: offset" in target.read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "field"), [
    (["Orders", "--pagination", "offset"], "NAME"),
    (["orders", "--pagination", "offset", "--namespace", "acme"], "--namespace"),
    (["orders", "--pagination", "offset", "--sandbox-port", "70000"], "--sandbox-port"),
])
def test_bad_arguments_are_usage_errors_naming_them(args: list[str], field: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _cli(capsys, "profiles", "new", *args, "--profiles-dir", str(tmp_path))
    assert code == 2 and doc["error"]["field"] == field
    assert not list(tmp_path.iterdir())


def test_an_unknown_mode_lists_the_modes(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _cli(capsys, "profiles", "new", "orders", "--pagination", "scroll")
    assert code == 2 and "cursor" in doc["error"]["message"]


def test_starter_text_is_deterministic() -> None:
    assert starter_profile("a", "link") == starter_profile("a", "link")
    moved = starter_profile("a", "link", sandbox_port=9000)
    assert "8765" not in moved and moved.count("9000") == 3  # the hint, baseUrl, allowedPorts
