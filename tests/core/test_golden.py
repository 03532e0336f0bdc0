"""Golden plans and determinism: shipped goldens match byte for byte, the same plan comes out
of separate processes with other hash seeds, time zones and locales, and `validate` compares
against a golden with stable findings."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.refs import format_ref
from tests.support.offline import SALES_EVENTS, plan_args, run_cli
from tests.support.paths import GOLDEN, PROFILES
from tests.support.paths import REPO as ROOT

CATALOG = ProfileCatalog.load(PROFILES)
GOLDEN_CASES = [(format_ref(r.ref), r.spec.envs[0], r.spec.golden)
                for r in CATALOG.resolve_all() if r.spec.golden]


def _args(ref: str, env: str, command: str = "plan") -> list[str]:
    tenant, project = ref.split("::")[0].split("/")
    return plan_args(ref, env=env, tenant=tenant, project=project, command=command)


def test_every_profile_and_golden_file_is_covered() -> None:
    assert len(GOLDEN_CASES) == 18
    assert sorted(g for _, _, g in GOLDEN_CASES) == sorted(
        f"golden/{p.name}" for p in GOLDEN.glob("*.json"))


def test_profiles_golden_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "profiles", "golden", "--profiles-dir", str(PROFILES))
    assert code == 0, out
    rows = json.loads(out)["golden"]
    assert len(rows) == 18
    assert {r["state"] for r in rows} == {"ok"}


@pytest.mark.parametrize(("ref", "env", "golden"), GOLDEN_CASES,
                         ids=[g for _, _, g in GOLDEN_CASES])
def test_plan_output_equals_golden_bytes(capsys: pytest.CaptureFixture[str], ref: str, env: str,
                                         golden: str) -> None:
    code, out, err = run_cli(capsys, *_args(ref, env))
    assert code == 0, out
    assert err == ""
    assert out.encode("utf-8") == (ROOT / golden).read_bytes()


# -- cross-process determinism ------------------------------------------------------------------

_SCRIPT = """
import contextlib, hashlib, io, json, sys
from chartly_dagster.cli.main import main
cases = json.loads(sys.argv[1])
digests = {}
for ref, args in cases:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(args)
    digests[ref] = [code, hashlib.sha256(buf.getvalue().encode("utf-8")).hexdigest()]
print(json.dumps(digests, sort_keys=True))
"""

ENVIRONMENTS = [
    {"PYTHONHASHSEED": "1", "TZ": "Asia/Kolkata", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
    {"PYTHONHASHSEED": "4242", "TZ": "America/Los_Angeles", "LC_ALL": "C", "LANG": "C"},
]


def _subprocess(env_changes: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "CHARTLY_"))}
    env.update(env_changes)
    return subprocess.run([sys.executable, *args], env=env, cwd=ROOT / "tests",
                          capture_output=True, text=True, encoding="utf-8", timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def process_digests() -> list[dict[str, list]]:
    cases = json.dumps([(ref, _args(ref, env)) for ref, env, _ in GOLDEN_CASES])
    results = []
    for env in ENVIRONMENTS:
        proc = _subprocess(env, "-c", _SCRIPT, cases)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    return results


def test_two_processes_print_the_same_plan_bytes(process_digests: list[dict[str, list]]) -> None:
    first, second = process_digests
    assert first == second
    for ref, _, golden in GOLDEN_CASES:
        assert first[ref] == [0, hashlib.sha256((ROOT / golden).read_bytes()).hexdigest()], ref


def test_cli_entry_point_in_separate_processes() -> None:
    """The literal `chartly-tool ... plan --format json` bytes, from two environments."""
    args = _args(SALES_EVENTS + "#dev", "dev")
    code = "import sys; from chartly_dagster.cli.main import main; sys.exit(main(sys.argv[1:]))"
    outputs = []
    for env in ENVIRONMENTS:
        proc = _subprocess(env, "-c", code, *args)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].encode() == (GOLDEN / "sales-events.dev.plan.json").read_bytes()
    plan_hash = json.loads(outputs[0])["plan"]["plan_hash"]
    golden = json.loads((GOLDEN / "sales-events.dev.plan.json").read_text(encoding="utf-8"))
    assert plan_hash == golden["plan"]["plan_hash"]


# -- validate against a golden ------------------------------------------------------------------

def _validate(ref: str, env: str, golden: Path | None) -> list[str]:
    args = _args(ref, env, "validate")
    return [*args, "--golden", str(golden)] if golden else args


@pytest.mark.parametrize(("ref", "env", "golden"), GOLDEN_CASES[::4],
                         ids=[g for _, _, g in GOLDEN_CASES[::4]])
def test_validate_against_matching_golden(capsys: pytest.CaptureFixture[str], ref: str,
                                          env: str, golden: str) -> None:
    for explicit in (ROOT / golden, None):   # --golden, and the profile's own golden
        code, out, _ = run_cli(capsys, *_validate(ref, env, explicit))
        assert code == 0, out
        doc = json.loads(out)
        assert doc["header"]["mode"] == "validate"
        assert doc["validation"] == {"ok": True, "code": None, "findings": []}


def test_validate_against_modified_golden(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    golden = json.loads((GOLDEN / "orders.plan.json").read_text(encoding="utf-8"))
    golden["plan"]["steps"][0]["params"]["limit"] = "999"
    golden["plan"]["limits"]["max_pages"] = 1
    golden["plan"]["egress"]["allowed_ports"] = [443, 8443]
    golden["plan"]["request"]["header_names"] = ["Accept"]
    golden["header"]["window"]["end"] = "2026-02-03T00:00:00Z"
    golden["header"]["tool_version"] = "0.0.0-not-pinned"
    del golden["plan"]["records"]["record_type"]
    golden["plan"]["extra"] = "zzz"
    path = tmp_path / "orders.plan.json"
    path.write_text(json.dumps(golden), encoding="utf-8")
    ref = "tenant-demo/proj-sales::connector/orders@2.1.0"
    code, out, err = run_cli(capsys, *_validate(ref, "staging", path))
    assert code == 4, out
    assert err == ""
    doc = json.loads(out)
    assert doc["validation"]["ok"] is False
    assert doc["validation"]["code"] == "validation_failed"
    findings = doc["validation"]["findings"]
    paths = [f["path"] for f in findings]
    assert paths == sorted(paths)
    assert paths == [
        "header.window.end",
        "plan.egress.allowed_ports[1]",
        "plan.extra",
        "plan.limits.max_pages",
        "plan.records.record_type",
        "plan.request.header_names[1]",
        "plan.steps[0].params.limit",
    ]
    codes = {f["path"]: f["code"] for f in findings}
    assert codes["plan.egress.allowed_ports[1]"] == "golden_missing"
    assert codes["plan.extra"] == "golden_missing"
    assert codes["plan.records.record_type"] == "golden_unexpected"
    assert codes["plan.limits.max_pages"] == "golden_mismatch"
    mismatch = next(f for f in findings if f["path"] == "plan.steps[0].params.limit")
    assert (mismatch["expected"], mismatch["actual"]) == ("999", "1000")
    # The same findings, in the same order, every time and in text form.
    code, again, _ = run_cli(capsys, *_validate(ref, "staging", path))
    assert again == out
    text_args = _validate(ref, "staging", path)
    text_args[text_args.index("--format") + 1] = "text"
    code, text, _ = run_cli(capsys, *text_args)
    assert code == 4
    lines = [line for line in text.splitlines() if line.startswith("  [golden_")]
    assert [line.split("] ", 1)[1].split(":", 1)[0] for line in lines] == paths


@pytest.mark.parametrize(("content", "label"), [
    (None, "missing"),
    ("{not json", "not JSON"),
    ('{"header": {}}', "no plan section"),
    ("[]", "not an object"),
])
def test_validate_against_unusable_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          content: str | None, label: str) -> None:
    path = tmp_path / "golden.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code, out, _ = run_cli(capsys, *_validate(SALES_EVENTS, "staging", path))
    assert code == 3, (label, out)
    error = json.loads(out)["error"]
    assert error["code"] == "precondition_failed"
    assert error["field"] == "--golden"


def test_profiles_golden_detects_stale_and_missing(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(PROFILES, tmp_path / "profiles")
    shutil.copytree(GOLDEN, tmp_path / "golden")
    stale = tmp_path / "golden" / "tickets.plan.json"
    stale.write_text(stale.read_text(encoding="utf-8").replace("per_page", "perPage"),
                     encoding="utf-8")
    (tmp_path / "golden" / "metrics.dev.plan.json").unlink()
    args = ["profiles", "golden", "--profiles-dir", str(tmp_path / "profiles")]
    code, out, _ = run_cli(capsys, *args)
    assert code == 4
    states = {r["golden"]: r["state"] for r in json.loads(out)["golden"]}
    assert states["golden/tickets.plan.json"] == "stale"
    assert states["golden/metrics.dev.plan.json"] == "missing"
    assert sum(s == "ok" for s in states.values()) == 16
    code, out, _ = run_cli(capsys, *args, "--write")
    assert code == 0
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    for path in GOLDEN.glob("*.json"):
        assert (tmp_path / "golden" / path.name).read_bytes() == path.read_bytes()
