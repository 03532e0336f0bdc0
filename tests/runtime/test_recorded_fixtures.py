"""The shipped profiles' recorded fixtures replay offline: one per pagination mode.

No sandbox runs here and the network seam fails the test on any connection: each
fixture's day replays through the real executor into the content hash it was recorded
with, holding exactly the records the sandbox's data defines for that day.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from chartly_dagster.core.plan import build_plan
from chartly_dagster.runtime.egress import GuardedNetworkBackend
from chartly_dagster.runtime.executor import window_file_name
from chartly_dagster.runtime.recording import recording_name
from chartly_dagster.runtime.storage import read_window_file
from chartly_dagster.sandbox import SandboxConfig
from tests.support.live import ID_FIELDS, PROFILES
from tests.support.recorded import RECORDINGS, WINDOW, replay_fixture, shipped

MODES = {"sales-events": "cursor", "sales-feed": "cursor", "orders": "offset",
         "invoices": "page", "metrics": "time-window", "tickets": "link"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an offline test opened a connection")

    monkeypatch.setattr(GuardedNetworkBackend, "connect_tcp", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _manifest(name: str) -> dict:
    resolved = shipped(name)
    folder = RECORDINGS / recording_name(window_file_name(resolved, WINDOW, None))
    return json.loads((folder / "recording.json").read_text(encoding="utf-8"))


def test_every_pagination_mode_has_a_fixture() -> None:
    assert {shipped(name).spec.pagination.mode for name in PROFILES} == set(MODES.values())
    assert {name: shipped(name).spec.pagination.mode for name in PROFILES} == MODES


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_fixture_replays_to_its_recorded_content(name: str, tmp_path: Path) -> None:
    manifest = _manifest(name)
    plan = build_plan(shipped(name), WINDOW)
    assert manifest["plan_hash"] == plan.plan_hash, (
        f"{name}'s plan changed: regenerate with `python -m tests.support.recorded`")
    result = replay_fixture(name, tmp_path)
    assert result.content_hash == manifest["content_hash"]
    assert result.recorded is not None and result.recorded.replayed
    assert result.recorded.response_hash == manifest["response_hash"]
    assert result.pages == manifest["pages"] > 1
    endpoint = PROFILES[name][2]
    stream = SandboxConfig().stream(endpoint)
    lo, hi = stream.index_range(int(WINDOW.start.timestamp()), int(WINDOW.end.timestamp()))
    truth = [str(r[ID_FIELDS[name]]) for r in stream.records(lo, hi)]
    ids = read_window_file(result.uri).column("record_id").to_pylist()
    assert sorted(ids) == sorted(truth) and len(set(ids)) == len(ids)
