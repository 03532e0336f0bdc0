"""Record a window against the sandbox, replay it with no network: same content, same hashes.

Every shipped profile (one per pagination mode) is recorded through `fetch_window`, then
replayed with the network seam rigged to fail the test on any connection; tampering with
one byte of a recording, or replaying it under another plan, is refused by name.
"""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import pytest

from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.egress import GuardedNetworkBackend
from chartly_dagster.runtime.executor import (
    NetworkOptions,
    Seams,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from chartly_dagster.runtime.recording import RecordTo, ReplayFrom
from chartly_dagster.runtime.storage import Storage, read_window_file
from tests.fixtures_profiles import sandbox_secrets
from tests.fixtures_runtime import (
    ALL_SECRETS,
    DAY,
    PROFILES,
    Live,
    RecordingSleep,
    rows_without_wall_clock,
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any connection attempt, at the egress backend and at the socket below it."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[1:3]))
        raise AssertionError("a replay opened a connection")

    monkeypatch.setattr(GuardedNetworkBackend, "connect_tcp", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def record(live: Live, name: str, window: Window, root: Path) -> WindowResult:
    resolved = live.resolve(name)
    return fetch_window(resolved, window, build_plan(resolved, window),
                        target=WindowTarget.at(str(live.out)),
                        network=NetworkOptions("dev", sandbox_secrets(),
                                               recording=RecordTo(Storage.parse(str(root)))),
                        seams=Seams(sleep=RecordingSleep()))


def replay(live: Live, name: str, window: Window, source: str, out: Path,
           response_hash: str | None = None) -> WindowResult:
    resolved = live.resolve(name)
    return fetch_window(resolved, window, build_plan(resolved, window),
                        target=WindowTarget.at(str(out)),
                        network=NetworkOptions("dev", recording=ReplayFrom(source,
                                                                           response_hash)))


def recorded_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() + (gzip.decompress(p.read_bytes())
                                       if p.suffix == ".gz" else b"")
                    for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_record_then_replay_gives_the_same_content_for_every_profile(
        live: Live, tmp_path: Path, name: str, no_network: list[str]) -> None:
    root = tmp_path / "rec"
    recorded = _record_with_network(live, name, root, no_network)
    assert recorded.recorded is not None and recorded.recorded.responses == recorded.requests
    assert recorded.checkpoint.response_hash == recorded.recorded.response_hash
    results = recorded.results_section()
    assert results["response_hash"] == recorded.recorded.response_hash
    replayed = replay(live, name, DAY, str(root), tmp_path / "replay")
    assert no_network == []
    assert replayed.content_hash == recorded.content_hash
    assert replayed.recorded is not None and replayed.recorded.replayed
    assert replayed.recorded.response_hash == recorded.recorded.response_hash
    assert (rows_without_wall_clock(read_window_file(replayed.uri))
            == rows_without_wall_clock(read_window_file(recorded.uri)))
    blob = recorded_bytes(root)
    for secret in ALL_SECRETS:
        assert secret.encode() not in blob


def _record_with_network(live: Live, name: str, root: Path,
                         attempts: list[str]) -> WindowResult:
    """Record with the real network (the fixture's traps lifted for this call only)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GuardedNetworkBackend, "connect_tcp", _REAL_CONNECT_TCP)
        mp.setattr(socket.socket, "connect", _REAL_CONNECT)
        mp.setattr(socket, "create_connection", _REAL_CREATE)
        result = record(live, name, DAY, root)
    attempts.clear()
    return result


_REAL_CONNECT_TCP = GuardedNetworkBackend.connect_tcp
_REAL_CONNECT = socket.socket.connect
_REAL_CREATE = socket.create_connection
