"""`run --apply --record DIR` and `run --replay DIR` through the real CLI entry point.

A replay needs no `--apply` and no secret (nothing leaves the machine), writes the same
content hash as the recorded run, and refuses a recording of another plan with exit 4
naming the fields that differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartly_dagster.cli.main import main
from tests.support.sandbox import LiveProfiles
from tests.support.secrets import SECRETS

REF = "tenant-demo/proj-sales::connector/orders@2.1.0#dev"
KEY = SECRETS[("orders-api", "api-key")]
DAY = ["--window-start", "2026-02-01T00:00:00Z", "--window-end", "2026-02-02T00:00:00Z"]


def _argv(live: LiveProfiles, *extra: str, env: str = "dev") -> list[str]:
    return ["connector-tester", "run", "--env", env, "--tenant", "tenant-demo", "--project",
            "proj-sales", "--connector-profile", REF, "--profiles-dir", str(live.profiles_dir),
            *DAY, *extra]


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert KEY not in out and KEY not in err and "Traceback" not in err
    return code, (json.loads(out) if out.strip().startswith("{") else {})


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTLY_SECRET_ORDERS_API_API_KEY", KEY)


def test_dev_run_records_next_to_its_output_and_replays_offline(
        live_profiles: LiveProfiles, key_env: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    code, live = _run(capsys, _argv(live_profiles, "--apply", "--output", str(out)))
    assert code == 0, live["validation"]
    recorded = live["results"]
    assert recorded["recording"]["replayed"] is False and recorded["recording"]["bytes"] > 0
    assert recorded["response_hash"] == recorded["checkpoint"]["payload"]["response_hash"]
    assert Path(recorded["recording"]["uri"].removeprefix("file://")).parent == Path(
        recorded["output"].removeprefix("file://")).parent
    requests = live_profiles.sandbox.request_count()

    monkeypatch.delenv("CHARTLY_SECRET_ORDERS_API_API_KEY")  # a replay needs no secret
    code, doc = _run(capsys, _argv(live_profiles, "--replay", str(out), "--output",
                                   str(tmp_path / "replayed")))
    assert code == 0, doc["validation"]
    results = doc["results"]
    assert doc["header"]["apply"] is False
    assert results["content_hash"] == recorded["content_hash"]
    assert results["response_hash"] == recorded["response_hash"]
    assert results["recording"]["replayed"] is True
    assert results["recording"]["content_hash"] == recorded["content_hash"]
    assert (results["records"], results["pages"]) == (recorded["records"], recorded["pages"])
    assert live_profiles.sandbox.request_count() == requests  # nothing left the machine


def test_record_dir_and_a_replay_under_another_plan_exits_4_naming_fields(
        live_profiles: LiveProfiles, key_env: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    recordings = tmp_path / "recordings"
    code, doc = _run(capsys, _argv(live_profiles, "--apply", "--output", str(tmp_path / "a"),
                                   "--record", str(recordings)))
    assert code == 0 and doc["results"]["recording"]["uri"].startswith(recordings.as_uri())
    assert not list((tmp_path / "a").rglob("*.recording"))
    code, doc = _run(capsys, _argv(live_profiles, "--replay", str(recordings), "--output",
                                   str(tmp_path / "b"), "--max-pages", "2"))
    assert code == 4 and doc["validation"]["code"] == "recording_mismatch"
    message = doc["validation"]["findings"][0]["message"]
    assert "plan.limits.max_pages" in message and "plan.plan_hash" not in message
    assert not list((tmp_path / "b").rglob("*.parquet"))


def test_replay_without_a_recording_is_a_precondition(live_profiles: LiveProfiles,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, doc = _run(capsys, _argv(live_profiles, "--replay", str(tmp_path / "empty"),
                                   "--output", str(tmp_path / "out")))
    assert code == 3 and doc["validation"]["code"] == "recording_not_found"
    assert doc["validation"]["findings"][0]["path"] == "--replay"


def test_record_and_replay_together_is_a_usage_error(live_profiles: LiveProfiles,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_argv(live_profiles, "--apply", "--record", str(tmp_path), "--replay",
                      str(tmp_path)))
    assert code == 2
    assert "--replay" in "".join(capsys.readouterr())


def test_recording_off_outside_dev_unless_asked(live_profiles: LiveProfiles, key_env: None,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    profile = live_profiles.profiles_dir / "sales" / "orders.yaml"
    doc = yaml.safe_load(profile.read_text(encoding="utf-8"))
    doc["variants"]["dev"]["spec"]["recording"] = {"enabled": False}
    profile.write_text(yaml.safe_dump(doc), encoding="utf-8")
    code, doc = _run(capsys, _argv(live_profiles, "--apply", "--output", str(tmp_path / "a")))
    assert code == 0 and "response_hash" not in doc["results"]
    assert not list(tmp_path.rglob("*.recording"))
    code, doc = _run(capsys, _argv(live_profiles, "--apply", "--output", str(tmp_path / "b"),
                                   "--record", str(tmp_path / "rec")))
    assert code == 0 and doc["results"]["response_hash"].startswith("sha256:")
