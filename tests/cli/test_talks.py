"""A CLI that talks: usage when called bare, help on every command and flag, only the
flags a command reads, text that fits 80 columns, and `doctor` that takes a window and
names the host and port it could not reach."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chartly_dagster.cli.main import build_parser
from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.refs import format_ref
from tests.support.offline import REF, base_doc, plan_args, run_cli, write_profile
from tests.support.paths import PROFILES
from tests.support.sandbox import LiveProfiles
from tests.support.secrets import SECRETS

WIDTH = 80


@pytest.mark.parametrize("argv", [[], ["connector-tester"], ["profiles"]])
def test_bare_command_prints_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("usage: chartly-tool")
    assert "COMMAND" in err


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name != "sandbox":  # the sandbox's options live in sandbox/cli.py
                    yield from _parsers(sub)


def test_help_has_text_for_every_flag_and_fits_80_columns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    parsers = list(_parsers(build_parser()))
    assert len(parsers) == 12  # chartly-tool, 2 groups, 4 + 5 commands
    for parser in parsers:
        for action in parser._actions:
            assert action.help, (parser.prog, action.option_strings or action.dest)
        text = parser.format_help()
        assert max(len(line) for line in text.splitlines()) <= WIDTH, text
        assert "`" not in text  # no docstring or code comment leaks into help
    flags = {p.prog.removeprefix("chartly-tool connector-tester "): {
        o for a in p._actions for o in a.option_strings} for p in parsers}
    assert not {"--apply", "--output", "--secrets-dir", "--golden", "--overwrite"} & flags["plan"]
    assert not {"--apply", "--output", "--secrets-dir"} & flags["validate"]
    assert {"--window-start", "--window-end", "--apply"} <= flags["doctor"]
    assert not {"--max-pages", "--output", "--golden"} & flags["doctor"]
    assert {"--apply", "--output", "--secrets-dir", "--overwrite"} <= flags["run"]


def test_text_output_fits_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for args in (["profiles", "list"], ["profiles", "golden"]):
        code, out, _ = run_cli(capsys, *args, "--format", "text", "--profiles-dir",
                               str(PROFILES))
        assert code == 0
        outputs.append(out)
    for resolved in ProfileCatalog.load(PROFILES).resolve_all():
        ref = resolved.ref
        code, out, _ = run_cli(capsys, *plan_args(
            format_ref(ref), env=resolved.spec.envs[0], tenant=ref.tenant,
            project=ref.project, fmt="text", command="validate"))
        assert code == 0, out
        outputs.append(out)
    for out in outputs:
        assert max(len(line) for line in out.splitlines()) <= WIDTH, out
    # Full values, never a shortened hash.
    assert all(len(word) == 71 for out in outputs[2:] for word in out.split()
               if word.startswith("sha256:"))


# -- doctor ------------------------------------------------------------------------------------

TOKEN = SECRETS[("sales-api", "token")]
DOCTOR = "tenant-demo/proj-sales::connector/sales-events@1.0.0#dev"


def _doctor(live: LiveProfiles, *extra: str) -> list[str]:
    return ["connector-tester", "doctor", "--env", "dev", "--tenant", "tenant-demo",
            "--project", "proj-sales", "--connector-profile", DOCTOR,
            "--profiles-dir", str(live.profiles_dir), "--apply", *extra]


def test_doctor_probes_the_window_it_is_given(
        live_profiles: LiveProfiles, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHARTLY_SECRET_SALES_API_TOKEN", TOKEN)
    window = ("2026-03-04T00:00:00Z", "2026-03-05T00:00:00Z")
    code, out, _ = run_cli(capsys, *_doctor(live_profiles, "--window-start", window[0],
                                            "--window-end", window[1]))
    doc = json.loads(out)
    assert code == 0 and doc["doctor"]["category"] == "ok"
    assert doc["header"]["window"] == {"start": window[0], "end": window[1]}
    (_, _, query), = live_profiles.sandbox.request_log
    assert (query["since"], query["until"]) == window
    live_profiles.sandbox.clear_requests()
    # Without window flags: the profile's first hour, as before.
    code, out, _ = run_cli(capsys, *_doctor(live_profiles))
    assert code == 0
    (_, _, query), = live_profiles.sandbox.request_log
    assert query["since"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("extra", [("--window-start", "2026-03-04T00:00:00Z"),
                                   ("--window-end", "2026-03-04T00:00:00Z"),
                                   ("--window-start", "0001-01-01T00:00:00+01:00",
                                    "--window-end", "2026-01-01T00:00:00Z")])
def test_doctor_window_flags_are_checked_before_anything_else(
        capsys: pytest.CaptureFixture[str], extra: tuple[str, ...]) -> None:
    args = ["connector-tester", "doctor", "--env", "dev", "--tenant", "t", "--project", "p",
            "--connector-profile", DOCTOR, "--profiles-dir", str(PROFILES), *extra]
    code, out, _ = run_cli(capsys, *args)
    error = json.loads(out)["error"]
    assert code == 2 and error["code"] == "usage_error"
    assert "window" in error["message"]


def test_doctor_refused_connection_names_host_and_port(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        doc = base_doc()
        doc["spec"]["auth"] = {"mode": "none"}
        dev = doc["variants"]["dev"]["spec"]
        dev["transport"]["baseUrl"] = f"http://localhost:{port}"
        dev["egressPolicy"]["allowedPorts"] = [port]
        write_profile(tmp_path, doc)
        code, out, _ = run_cli(capsys, "connector-tester", "doctor", "--env", "dev",
                               "--tenant", "tenant-test", "--project", "proj-test",
                               "--connector-profile", REF + "#dev", "--profiles-dir",
                               str(tmp_path), "--apply")
    report = json.loads(out)["doctor"]
    assert code == 1 and report["category"] == "network"
    assert f"connection refused by localhost:{port}" in report["message"]
