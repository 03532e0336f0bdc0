"""The CLI's offline contract: exit codes of the failure table (docs/contract.md#exit-codes),
where errors go, the safety gates (no network without --apply) and redaction of secrets in
every output."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support.offline import (
    REF,
    SALES_EVENTS,
    WINDOW,
    base_doc,
    plan_args,
    run_cli,
    write_profile,
)
from tests.support.paths import GOLDEN, PROFILES

DEV = SALES_EVENTS + "#dev"


def _dev(command: str = "plan", fmt: str = "json", **kw: Any) -> list[str]:
    args = plan_args(DEV, env="dev", command=command, fmt=fmt, **kw)
    if command == "doctor":  # doctor takes no window
        args = _without(_without(args, "--window-start"), "--window-end")
    return args


def _without(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def _with(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[:i + 1], value, *args[i + 2:]]


def _error(out: str) -> dict[str, Any]:
    doc = json.loads(out)
    assert set(doc) == {"error", "exit_code"}
    return doc


def test_plan_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *_dev())
    assert code == 0, out
    doc = json.loads(out)
    assert set(doc) == {"header", "plan", "validation"}
    assert doc["header"]["mode"] == "plan"
    assert doc["header"]["dry_run"] is False and doc["header"]["apply"] is False
    assert doc["validation"] == {"ok": True, "code": None, "findings": []}
    assert err == ""


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *_dev(fmt="text"))
    assert code == 0
    assert "validation  ok" in out
    assert "step 0   GET http://localhost:8765/v1/events\n" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert err == ""


# -- the failure table, one row at a time -------------------------------------------------------

@pytest.mark.parametrize(("label", "args", "exit_code", "error_code"), [
    ("missing --connector-profile", _without(_dev(), "--connector-profile"), 3,
     "precondition_failed"),
    ("unknown ref", _with(_dev(), "--connector-profile",
                          "tenant-demo/proj-sales::connector/nope@1.0.0"), 3,
     "profile_not_found"),
    ("unknown variant", _with(_dev(), "--connector-profile", SALES_EVENTS + "#qa"), 3,
     "profile_not_found"),
    ("env not in profile envs", _with(_dev(), "--env", "prod"), 3, "precondition_failed"),
    ("malformed ref", _with(_dev(), "--connector-profile", "sales-events@1.0.0"), 2,
     "invalid_ref"),
    ("ref with uppercase", _with(_dev(), "--connector-profile", DEV.upper()), 2, "invalid_ref"),
    ("missing --env", _without(_dev(), "--env"), 2, "usage_error"),
    ("unknown --env", _with(_dev(), "--env", "qa"), 2, "usage_error"),
    ("missing --tenant", _without(_dev(), "--tenant"), 2, "usage_error"),
    ("missing --window-start", _without(_dev(), "--window-start"), 2, "usage_error"),
    ("bad --window-start", _with(_dev(), "--window-start", "yesterday"), 2, "usage_error"),
    ("naive --window-end", _with(_dev(), "--window-end", "2026-02-02T00:00:00"), 2,
     "usage_error"),
    ("end before start", _with(_dev(), "--window-end", "2026-01-31T00:00:00Z"), 2,
     "usage_error"),
    ("empty window", _with(_dev(), "--window-end", WINDOW[0]), 2, "usage_error"),
    ("--max-pages 0", [*_dev(), "--max-pages", "0"], 2, "usage_error"),
    ("--max-records -5", [*_dev(), "--max-records", "-5"], 2, "usage_error"),
    ("--max-bytes abc", [*_dev(), "--max-bytes", "abc"], 2, "usage_error"),
    ("unknown flag", [*_dev(), "--yolo"], 2, "usage_error"),
    ("unknown command", ["connector-tester", "explode"], 2, "usage_error"),
    ("plan --apply", [*_dev(), "--apply"], 2, "usage_error"),
    ("tenant mismatch", _with(_dev(), "--tenant", "tenant-other"), 5,
     "unsafe_operation_blocked"),
    ("project mismatch", _with(_dev(), "--project", "proj-ops"), 5,
     "unsafe_operation_blocked"),
    ("doctor without --apply", _dev("doctor"), 5, "unsafe_operation_blocked"),
    ("doctor --dry-run --apply", [*_dev("doctor"), "--dry-run", "--apply"], 5,
     "unsafe_operation_blocked"),
    ("validate --apply", [*_dev("validate"), "--apply"], 2, "usage_error"),
])
def test_exit_code_table(capsys: pytest.CaptureFixture[str], label: str, args: list[str],
                         exit_code: int, error_code: str) -> None:
    # JSON: the error document is on stdout, stderr stays empty.
    code, out, err = run_cli(capsys, *args)
    assert code == exit_code, (label, out, err)
    doc = _error(out)
    assert doc["exit_code"] == exit_code
    assert doc["error"]["code"] == error_code
    assert doc["error"]["message"]
    assert err == ""
    # text: the error is on stderr, stdout stays empty.
    text_args = (_with(args, "--format", "text") if "--format" in args
                 else [*args, "--format", "text"])
    code, out, err = run_cli(capsys, *text_args)
    assert code == exit_code, (label, out, err)
    assert out == ""
    assert err.startswith(f"error [{error_code}]: ")


@pytest.mark.parametrize(("command", "extra"), [("run", ()), ("validate", ()),
                                              ("run", ("--apply",)), ("doctor", ("--apply",))])
def test_missing_ref_is_precondition_for_every_command(
        capsys: pytest.CaptureFixture[str], no_network: list[Any], command: str,
        extra: tuple[str, ...]) -> None:
    args = [*_without(_dev(command), "--connector-profile"), *extra]
    code, out, _ = run_cli(capsys, *args)
    assert code == 3, out
    assert _error(out)["error"]["field"] == "--connector-profile"
    assert no_network == []


def test_usage_error_keeps_json_format_before_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "connector-tester", "plan", "--format", "json")
    assert code == 2
    assert "required" in _error(out)["error"]["message"]
    assert err == ""


# -- profile failing schema validation ----------------------------------------------------------

def test_broken_profile_exit_4_names_path_and_field(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    doc = base_doc()
    doc["spec"]["pagination"]["mode"] = "bogus"
    write_profile(tmp_path, doc, "team/widgets.yaml")
    args = plan_args(REF, tenant="tenant-test", project="proj-test", profiles=tmp_path)
    code, out, err = run_cli(capsys, *args)
    assert code == 4
    error = _error(out)["error"]
    assert error["code"] == "profile_invalid"
    assert {"path": "team/widgets.yaml", "field": "spec.pagination.mode"}.items() <= \
        error["errors"][0].items()
    assert "team/widgets.yaml: spec.pagination.mode" in error["message"]
    code, out, err = run_cli(capsys, *_with(args, "--format", "text"))
    assert code == 4 and out == ""
    assert "team/widgets.yaml: spec.pagination.mode" in err
    for listing in (["profiles", "list"], ["profiles", "golden"]):
        code, out, _ = run_cli(capsys, *listing, "--profiles-dir", str(tmp_path))
        assert code == 4
        assert _error(out)["error"]["errors"][0]["field"] == "spec.pagination.mode"


def test_every_broken_file_in_cli_output(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for i, breakage in enumerate(["pagnation", "rateLimit", "transport"]):
        doc = base_doc()
        doc["metadata"]["name"] = f"w{i}"
        if breakage == "pagnation":
            doc["spec"]["pagnation"] = doc["spec"].pop("pagination")
        else:
            doc["spec"].pop(breakage)
        write_profile(tmp_path, doc, f"w{i}.yaml")
    code, out, _ = run_cli(capsys, "profiles", "list", "--profiles-dir", str(tmp_path))
    assert code == 4
    errors = _error(out)["error"]["errors"]
    assert [(e["path"], e["field"]) for e in errors] == [
        ("w0.yaml", "spec.pagination"), ("w0.yaml", "spec.pagnation"),
        ("w1.yaml", "spec.rateLimit"), ("w2.yaml", "spec.transport")]


# -- safety gates: run / doctor never touch the network without --apply -------------------------

@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError(f"network attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return calls


@pytest.fixture
def closed_port_profiles(tmp_path: Path) -> Path:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    doc = base_doc()
    doc["variants"]["dev"]["spec"]["transport"]["baseUrl"] = f"http://localhost:{port}"
    doc["variants"]["dev"]["spec"]["egressPolicy"]["allowedPorts"] = [port]
    write_profile(tmp_path, doc)
    return tmp_path


def _local(command: str, profiles: Path, *extra: str, fmt: str = "json") -> list[str]:
    args = plan_args(REF + "#dev", env="dev", tenant="tenant-test", project="proj-test",
                     profiles=profiles, command=command, fmt=fmt)
    if command == "doctor":
        args = _without(_without(args, "--window-start"), "--window-end")
    return [*args, *extra]


@pytest.mark.parametrize(("command", "extra", "reason"), [
    ("run", (), "requires --apply"),
    ("run", ("--dry-run",), "--dry-run never performs network I/O"),
    ("run", ("--dry-run", "--apply"), "--dry-run never performs network I/O"),
    ("run", ("--max-pages", "1", "--secrets-dir", "/nonexistent"), "requires --apply"),
])
def test_run_without_apply_is_blocked_offline(
        capsys: pytest.CaptureFixture[str], no_network: list[Any], closed_port_profiles: Path,
        command: str, extra: tuple[str, ...], reason: str) -> None:
    code, out, err = run_cli(capsys, *_local(command, closed_port_profiles, *extra))
    assert code == 5, out
    doc = json.loads(out)
    assert doc["header"]["mode"] == "run"
    assert doc["header"]["dry_run"] is ("--dry-run" in extra)
    assert doc["validation"]["ok"] is False
    assert doc["validation"]["code"] == "unsafe_operation_blocked"
    assert reason in doc["validation"]["findings"][0]["message"]
    assert "results" not in doc
    assert no_network == []
    code, out, err = run_cli(capsys, *_local(command, closed_port_profiles, *extra,
                                             fmt="text"))
    assert code == 5
    assert err == ""
    assert "FAILED (unsafe_operation_blocked)" in out
    assert no_network == []


@pytest.mark.parametrize("extra", [(), ("--dry-run",), ("--dry-run", "--apply")])
def test_doctor_without_apply_is_blocked_offline(
        capsys: pytest.CaptureFixture[str], no_network: list[Any], closed_port_profiles: Path,
        extra: tuple[str, ...]) -> None:
    code, out, _ = run_cli(capsys, *_local("doctor", closed_port_profiles, *extra))
    assert code == 5, out
    assert _error(out)["error"]["code"] == "unsafe_operation_blocked"
    assert no_network == []


@pytest.mark.parametrize("command", ["plan", "validate"])
def test_plan_and_validate_never_touch_the_network(
        capsys: pytest.CaptureFixture[str], no_network: list[Any], tmp_path: Path,
        command: str) -> None:
    args = _dev(command)
    if command == "validate":
        args += ["--golden", str(GOLDEN / "sales-events.dev.plan.json")]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0, out
    assert no_network == []


# -- redaction ----------------------------------------------------------------------------------

SECRET = "supersecret-4f1d2c9e8b7a"


@pytest.fixture
def secrets_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("CHARTLY_SECRET_SALES_API_TOKEN", "CHARTLY_SECRET_BILLING_API_API_KEY",
                 "CHARTLY_SECRET_ORDERS_API_API_KEY", "CHARTLY_SECRET_HELPDESK_PASSWORD",
                 "CHARTLY_SECRET_HELPDESK_USERNAME", "SALES_API_TOKEN", "TOKEN"):
        monkeypatch.setenv(name, SECRET)
    secrets = tmp_path / "secrets"
    for name, key in (("sales-api", "token"), ("billing-api", "api-key"),
                      ("orders-api", "api-key"), ("helpdesk", "password")):
        (secrets / name).mkdir(parents=True, exist_ok=True)
        (secrets / name / key).write_text(SECRET, encoding="utf-8")
    return secrets


PROFILE_REFS = [
    ("tenant-demo/proj-sales::connector/sales-events@1.0.0", "proj-sales"),
    ("tenant-demo/proj-sales::connector/invoices@1.0.0", "proj-sales"),
    ("tenant-demo/proj-sales::connector/orders@2.1.0", "proj-sales"),
    ("tenant-demo/proj-ops::connector/tickets@1.0.0", "proj-ops"),
]


@pytest.mark.parametrize(("ref", "project"), PROFILE_REFS)
def test_no_secret_in_any_output(capsys: pytest.CaptureFixture[str], secrets_everywhere: Path,
                                 ref: str, project: str) -> None:
    outputs: list[str] = []
    for fmt in ("json", "text"):
        base = plan_args(ref, project=project, fmt=fmt)
        for args in (base, [*_with(base, "--connector-profile", ref + "#dev"), "--env", "dev"],
                     _with(base, "--env", "staging")):
            code, out, err = run_cli(capsys, *args)
            outputs += [out, err]
        validate = [*plan_args(ref, project=project, fmt=fmt, command="validate")]
        code, out, err = run_cli(capsys, *validate)
        assert code == 0, out
        outputs += [out, err]
        run = [*plan_args(ref, project=project, fmt=fmt, command="run"),
               "--secrets-dir", str(secrets_everywhere), "--dry-run"]
        code, out, err = run_cli(capsys, *run)
        assert code == 5
        outputs += [out, err]
        for extra in (["list"], ["show", ref], ["show", ref + "#dev"], ["golden"]):
            code, out, err = run_cli(capsys, "profiles", *extra, "--format", fmt,
                                     "--profiles-dir", str(PROFILES))
            assert code == 0, out
            outputs += [out, err]
    joined = "\n".join(outputs)
    assert SECRET not in joined
    assert "supersecret" not in joined
    assert "secretRef:" in joined


def test_plans_carry_only_secret_ref_forms(capsys: pytest.CaptureFixture[str],
                                           secrets_everywhere: Path) -> None:
    import re

    for ref, project in PROFILE_REFS:
        code, out, _ = run_cli(capsys, *plan_args(ref, project=project))
        assert code == 0
        plan = json.loads(out)["plan"]
        for value in plan["request"]["auth"]["secret_refs"]:
            assert re.fullmatch(r"secretRef:[a-z0-9.-]+/[A-Za-z0-9._-]+", value)
        for step in plan["steps"]:
            for value in step["params"].values():
                if "secret" in value.lower():
                    assert re.fullmatch(r"<secretRef:[a-z0-9.-]+/[A-Za-z0-9._-]+>", value)


INLINE = "abc123DEF456ghi789jkl"


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d["spec"]["request"].update(params={"api_key": INLINE}),
     "spec.request.params.api_key"),
    (lambda d: d["spec"]["request"].update(headers={"Authorization": f"Bearer {INLINE}"}),
     "spec.request.headers.Authorization"),
    (lambda d: d["spec"]["request"].update(headers={"X-Trace": f"token {INLINE}"}),
     "spec.request.headers.X-Trace"),
    (lambda d: d["spec"]["request"].update(params={"q": f"sk_live_{INLINE}"}),
     "spec.request.params.q"),
    (lambda d: d["spec"]["transport"].update(
        baseUrl=f"https://svc:{INLINE}@api.widgets.example.invalid"),
     "spec.transport.baseUrl"),
    (lambda d: d["variants"]["dev"]["spec"]["transport"].update(
        baseUrl=f"http://localhost:8765/?api_key={INLINE}"),
     "variants.dev.spec.transport.baseUrl"),
])
def test_inline_credential_rejected_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            mutate: Any, field: str) -> None:
    doc = base_doc()
    mutate(doc)
    write_profile(tmp_path, doc)
    args = plan_args(REF, tenant="tenant-test", project="proj-test", profiles=tmp_path)
    code, out, err = run_cli(capsys, *args)
    assert code == 4
    errors = _error(out)["error"]["errors"]
    assert field in [e["field"] for e in errors]
    code, out2, err2 = run_cli(capsys, *_with(args, "--format", "text"))
    assert code == 4
    assert field in err2
    code, out3, err3 = run_cli(capsys, "profiles", "show", REF, "--profiles-dir", str(tmp_path))
    assert code == 4
    for text in (out, err, out2, err2, out3, err3):
        assert INLINE not in text
