"""`connector-tester run --apply` and `doctor --apply` against the sandbox over loopback.

The online rows of the failure table in docs/contract.md#exit-codes (401 -> 4, SSRF -> 4,
rate limit exceeded -> 4, missing secret -> 3), the results section, the Parquet file and
redaction, all through the real CLI entry point with secrets from the environment.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from chartly_dagster.cli.main import main
from chartly_dagster.sandbox import Fault
from tests.support.sandbox import LiveProfiles
from tests.support.secrets import SECRETS

REF = "tenant-demo/proj-sales::connector/sales-events@1.0.0#dev"
TOKEN = SECRETS[("sales-api", "token")]
DAY = ["--window-start", "2026-02-01T00:00:00Z", "--window-end", "2026-02-02T00:00:00Z"]


def _argv(live: LiveProfiles, command: str, *extra: str, ref: str = REF,
          project: str = "proj-sales") -> list[str]:
    argv = ["connector-tester", command, "--env", "dev", "--tenant", "tenant-demo",
            "--project", project, "--connector-profile", ref,
            "--profiles-dir", str(live.profiles_dir), "--apply", *extra]
    return [*argv, *DAY] if command == "run" else argv


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err
    return code, (json.loads(out) if out.strip().startswith("{") else {}), out + err


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTLY_SECRET_SALES_API_TOKEN", TOKEN)


def test_run_apply_writes_the_window_and_prints_results(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path)))
    truth = live_profiles.sandbox.ground_truth("/v1/events", "2026-02-01T00:00:00Z",
                                               "2026-02-02T00:00:00Z")
    assert code == 0, doc["validation"]
    results = doc["results"]
    assert doc["header"]["mode"] == "run" and doc["header"]["apply"] is True
    assert results["outcome"] == "complete" and results["records"] == len(truth)
    assert results["checkpoint"]["checkpoint_type"] == "cursor"
    assert "updated_at" not in results["checkpoint"]  # no wall clock in the output
    path = Path(results["output"].removeprefix("file://"))
    assert path.is_file() and path.is_relative_to(tmp_path)
    ids = pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in truth)


def test_run_caps_stop_cleanly(live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path),
                                      "--max-pages", "1"))
    assert doc["plan"]["limits"]["max_pages"] == 1
    assert doc["results"]["outcome"] == "capped" and doc["results"]["pages"] == 1
    assert doc["results"]["findings"][0]["code"] == "cap_reached"
    assert code == 0 and doc["validation"]["ok"]  # the cap the caller asked for is no failure


def test_run_401_is_validation_failed(live_profiles: LiveProfiles, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHARTLY_SECRET_SALES_API_TOKEN", "wrong-token-0b5e")
    code, doc, text = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path)))
    assert code == 4 and doc["validation"]["code"] == "unauthenticated"
    assert "wrong-token-0b5e" not in text
    assert not list(tmp_path.rglob("*.parquet"))


def test_run_redirect_to_metadata_address_is_refused(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    live_profiles.sandbox.faults.add(Fault("redirect", endpoint="/v1/events",
                                           location="http://169.254.169.254/latest/meta-data/"))
    code, doc, _ = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path)))
    assert code == 4 and doc["validation"]["code"] == "egress_refused"
    assert not list(tmp_path.rglob("*.parquet"))


def test_run_rate_limit_beyond_retry_after_cap_is_validation_failed(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    live_profiles.sandbox.faults.add(Fault("status", endpoint="/v1/events", status=429,
                                           retry_after_s=3600))
    code, doc, _ = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path)))
    assert code == 4 and doc["validation"]["code"] == "rate_limited"
    assert live_profiles.sandbox.request_count("/v1/events") == 1  # not waited for, not retried


def test_run_missing_secret_is_precondition_failed(
        live_profiles: LiveProfiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CHARTLY_SECRET_SALES_API_TOKEN", raising=False)
    code, doc, text = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path)))
    assert code == 3 and doc["validation"]["code"] == "secret_not_found"
    assert "secretRef:sales-api/token" in text
    assert live_profiles.sandbox.request_count() == 0


def test_run_text_format(live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, text = _run(capsys, _argv(live_profiles, "run", "--output", str(tmp_path),
                                       "--format", "text"))
    assert code == 0
    assert "results" in text and "outcome" in text and "validation  ok" in text


@pytest.mark.parametrize(("setup", "category", "exit_code"), [
    ("ok", "ok", 0),
    ("wrong-token", "auth", 4),
    ("forbidden", "permission", 4),
])
def test_doctor_categories(live_profiles: LiveProfiles, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str], setup: str, category: str,
                           exit_code: int) -> None:
    monkeypatch.setenv("CHARTLY_SECRET_SALES_API_TOKEN",
                       "wrong-token-77aa" if setup == "wrong-token" else TOKEN)
    if setup == "forbidden":
        live_profiles.sandbox.config.forbidden.add("/v1/events")
    code, doc, _ = _run(capsys, _argv(live_profiles, "doctor"))
    report = doc["doctor"]
    assert (code, report["category"]) == (exit_code, category)
    assert (report["latency_ms"] is not None) == (setup != "network")


def test_doctor_network_error(live_profiles: LiveProfiles, token_env: None,
                              capsys: pytest.CaptureFixture[str]) -> None:
    live_profiles.sandbox.close()  # nothing listens on the profile's port any more
    code, doc, _ = _run(capsys, _argv(live_profiles, "doctor"))
    assert code == 1 and doc["doctor"]["category"] == "network"
    assert doc["doctor"]["latency_ms"] is None


def _window(start: str, end: str) -> list[str]:
    return ["--window-start", start, "--window-end", end]


def test_run_files_are_named_by_window_start_and_end(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(live_profiles, "run", "--output", str(tmp_path))[:-len(DAY)]
    day = _run(capsys, [*argv, *DAY])
    week = _run(capsys, [*argv, *_window("2026-02-01T00:00:00Z", "2026-02-08T00:00:00Z")])
    assert day[0] == week[0] == 0
    names = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert names == ["2026-02-01T00_00_00Z--2026-02-02T00_00_00Z.parquet",
                     "2026-02-01T00_00_00Z--2026-02-08T00_00_00Z.parquet"]


def test_run_refuses_to_overwrite_another_plans_file_unless_asked(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(live_profiles, "run", "--output", str(tmp_path))
    code, first, _ = _run(capsys, argv)
    path = Path(first["results"]["output"].removeprefix("file://"))
    assert _run(capsys, argv)[0] == 0  # the same plan again replaces its own file
    before = path.read_bytes()
    requests = live_profiles.sandbox.request_count()
    # Another cap is another plan (its hash differs): its window file would replace this one.
    code, doc, _ = _run(capsys, [*argv, "--max-pages", "1"])
    assert code == 3 and doc["validation"]["code"] == "precondition_failed"
    (finding,) = doc["validation"]["findings"]
    assert finding["path"] == "--overwrite" and str(path) in finding["message"]
    assert first["plan"]["plan_hash"] in finding["message"]
    assert live_profiles.sandbox.request_count() == requests  # refused before any request
    assert path.read_bytes() == before
    code, doc, _ = _run(capsys, [*argv, "--max-pages", "1", "--overwrite"])
    assert code == 0 and doc["results"]["pages"] == 1 and doc["results"]["capped_by"] == "max_pages"


@pytest.mark.parametrize("kind", ["file", "proc", "sys"])
def test_run_output_that_is_not_a_writable_folder_names_it(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path, kind: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    output = {"file": str(tmp_path / "hostname"), "proc": "/proc/self/chartly",
              "sys": "/sys/chartly-out"}[kind]
    if kind == "file":
        Path(output).write_text("a file\n")
    code, doc, text = _run(capsys, _argv(live_profiles, "run", "--output", output))
    assert code == 3 and doc["validation"]["code"] == "precondition_failed"
    (finding,) = doc["validation"]["findings"]
    assert finding["path"] == "--output" and repr(output) in finding["message"]
    assert "Traceback" not in text
    assert live_profiles.sandbox.request_count() == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _volatile(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "results": {**doc["results"], "duration_seconds": 0, "file_bytes": 0}}


def test_run_shows_progress_on_a_terminal_only_and_stdout_is_unchanged(
        live_profiles: LiveProfiles, token_env: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(live_profiles, "run", "--output", str(tmp_path))
    code, quiet, text = _run(capsys, argv)
    assert code == 0 and "records/s" not in text  # captured stderr is no terminal
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, shown, _ = _run(capsys, argv)
    assert code == 0 and _volatile(shown) == _volatile(quiet)
    lines = terminal.getvalue().split("\r")
    pages = shown["results"]["pages"]
    assert [line.split()[1] for line in lines if line.startswith("page ")] == [
        str(page) for page in range(1, pages + 1)]
    last = lines[-1]
    assert f"records {shown['results']['records']:,}" in last
    assert "records/s" in last and "elapsed" in last and last.endswith("\n")
