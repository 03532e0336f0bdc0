"""Window files: caps, no partial file after a crash, resume after the last checkpointed
page, determinism of content and hash, and the resume contract the Dagster assets use.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chartly_dagster.core.errors import PreconditionFailed, UpstreamUnavailable, UsageError
from chartly_dagster.core.plan import Limits, build_plan
from chartly_dagster.runtime.envelope import content_hash
from chartly_dagster.runtime.executor import (
    NetworkOptions,
    PageProgress,
    ResumeReport,
    RunEvent,
    WindowTarget,
    fetch_window,
    window_file_name,
)
from chartly_dagster.runtime.storage import Storage, read_window_file
from chartly_dagster.sandbox import Fault
from tests.support.live import (
    DAY,
    PROFILES,
    Live,
    files_under,
    last_resume,
    ref_text,
    rows_without_wall_clock,
    written_ids,
)
from tests.support.paths import REPO

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")
ALL = sorted(PROFILES)


# -- caps ---------------------------------------------------------------------------------

def test_max_pages_caps_the_window(live: Live) -> None:
    result = live.fetch("sales-feed", DAY, limits=Limits(max_pages=2))
    assert result.outcome == "capped" and result.pages == 2
    assert result.capped_by == result.results_section()["capped_by"] == "max_pages"
    assert result.findings == [{"code": "cap_reached", "message":
                                "max_pages 2 reached with more pages to fetch"}]
    assert written_ids(result) == live.truth_ids("sales-feed", DAY)[:500]  # 2 x 250
    assert live.sandbox.request_count("/v1/feed") == 2


def test_max_records_cuts_mid_page(live: Live) -> None:
    result = live.fetch("sales-events", DAY, limits=Limits(max_records=700))
    assert result.outcome == "capped" and result.records == 700
    assert result.capped_by == "max_records"
    assert [f["code"] for f in result.findings] == ["cap_reached"]
    assert "max_records 700" in result.findings[0]["message"]
    assert written_ids(result) == live.truth_ids("sales-events", DAY)[:700]
    assert live.sandbox.request_count("/v1/events") == 2


def test_max_bytes_caps_after_the_page_that_crossed_it(live: Live) -> None:
    result = live.fetch("tickets", DAY, limits=Limits(max_bytes=1))
    assert result.outcome == "capped" and result.pages == 1
    assert result.capped_by == "max_bytes"
    assert "max_bytes 1" in result.findings[0]["message"]
    assert written_ids(result) == live.truth_ids("tickets", DAY)[:100]


def test_limits_equal_to_the_window_do_not_cap(live: Live) -> None:
    result = live.fetch("sales-events", DAY, limits=Limits(max_pages=3, max_records=1440))
    assert result.outcome == "complete" and result.findings == []
    assert result.capped_by is None and result.results_section()["capped_by"] is None


# -- crash and resume ---------------------------------------------------------------------

def assert_nothing_final(out: Path) -> None:
    assert files_under(out, "*.parquet") == []
    assert files_under(out, "*.tmp") == []


@pytest.mark.parametrize("name", ["sales-events", "sales-feed", "orders", "invoices",
                                  "metrics", "tickets"])
def test_crash_on_page_three_then_resume_gives_exactly_the_ground_truth(
        live: Live, name: str) -> None:
    if name in ("sales-events", "orders"):  # too few pages a day at their page sizes
        live.add_variant(name, "devsmall", {"pagination": {"pageSize": 100}})
        variant = "devsmall"
    else:
        variant = "dev"
    path = PROFILES[name][2]
    live.sandbox.faults.add(Fault("status", endpoint=path, status=500, on_request=3,
                                  times=None))
    progress: list[PageProgress] = []
    with pytest.raises(UpstreamUnavailable):
        live.fetch(name, DAY, variant=variant, on_page=progress.append)
    assert [p.page for p in progress] == [1, 2]
    assert_nothing_final(live.out)
    resume = last_resume(progress)
    assert resume.pages == 2 and resume.records == progress[-1].records
    assert progress[-1].checkpoint.to_contract()["payload"]["pages"] == 2

    live.sandbox.faults.clear()
    live.sandbox.clear_requests()
    result = live.fetch(name, DAY, variant=variant, resume=resume)
    ids = written_ids(result)
    assert ids == live.truth_ids(name, DAY) and len(set(ids)) == len(ids)
    assert result.resumed_from_page == 2 and result.outcome == "complete"
    assert result.records == len(ids)
    assert live.sandbox.request_count(path) == result.pages - 2  # pages 1-2 not fetched again
    table = read_window_file(result.uri)
    assert table.column("sequence").to_pylist() == list(range(len(ids)))
    assert files_under(live.out, "*.arrow") == []  # staging cleared after the final file


def test_on_page_raising_leaves_no_file_and_resume_refetches_the_unrecorded_page(
        live: Live) -> None:
    progress: list[PageProgress] = []

    def on_page(p: PageProgress) -> None:
        if p.page == 3:
            raise RuntimeError("observation store down")
        progress.append(p)

    with pytest.raises(RuntimeError):
        live.fetch("tickets", DAY, on_page=on_page)
    assert_nothing_final(live.out)
    live.sandbox.clear_requests()
    result = live.fetch("tickets", DAY, resume=last_resume(progress))
    assert written_ids(result) == live.truth_ids("tickets", DAY)
    assert live.sandbox.request_count("/v1/tickets") == 15 - 2  # page 3 fetched again


def test_resume_without_staged_pages_starts_over_and_says_so(live: Live,
                                                             tmp_path: Path) -> None:
    progress: list[PageProgress] = []
    live.sandbox.faults.add(Fault("status", endpoint="/v1/feed", status=503, on_request=3,
                                  times=None))
    with pytest.raises(UpstreamUnavailable):
        live.fetch("sales-feed", DAY, on_page=progress.append)
    live.sandbox.faults.clear()
    live.sandbox.clear_requests()
    # Another machine: same checkpoint, but the staged pages are not there.
    events: list[RunEvent] = []
    result = live.fetch("sales-feed", DAY, resume=last_resume(progress),
                        dest=tmp_path / "elsewhere", on_progress=events.append)
    assert written_ids(result) == live.truth_ids("sales-feed", DAY)
    report = events[0]
    assert isinstance(report, ResumeReport) and report.staging_lost
    assert (report.requested_page, report.resumed_from_page) == (2, 0)
    assert report.message.startswith("staging lost, fetching from page 0")
    assert result.resumed_from_page == 0  # not the checkpoint's page 2
    assert live.sandbox.request_count("/v1/feed") == result.pages  # every page fetched


def test_resume_with_staged_pages_reports_where_it_resumed(live: Live) -> None:
    progress: list[PageProgress] = []
    live.sandbox.faults.add(Fault("status", endpoint="/v1/tickets", status=401, on_request=4))
    with pytest.raises(Exception, match="401"):
        live.fetch("tickets", DAY, on_page=progress.append)
    events: list[RunEvent] = []
    result = live.fetch("tickets", DAY, resume=last_resume(progress), on_progress=events.append)
    report = events[0]
    assert isinstance(report, ResumeReport) and not report.staging_lost
    assert report.resumed_from_page == result.resumed_from_page == 3
    assert report.message == f"resuming after page 3 ({progress[-1].records} records staged)"


# -- leftovers of killed runs -------------------------------------------------------------

def test_temp_files_of_a_killed_run_are_removed_when_the_window_is_fetched_again(
        live: Live) -> None:
    relative = window_file_name(live.resolve("orders"), DAY, None)
    folder, name = (live.out / relative).parent, (live.out / relative).name
    folder.mkdir(parents=True)
    # What a SIGKILLed run leaves: a half-written temp file of this window's Parquet file.
    stale = [folder / f".{name}.{tag * 32}.tmp" for tag in "ab"]
    for path in stale:
        path.write_bytes(b"PAR1 half a file")
    other = folder / ".another-window.parquet.cccc.tmp"  # not this window's: left alone
    other.write_bytes(b"x")
    result = live.fetch("orders", DAY)
    assert not any(path.exists() for path in stale) and other.exists()
    assert files_under(live.out, f".{name}.*") == []
    assert result.uri.endswith(name)


#: fetches a window and SIGKILLs itself once page 2 is done, as an OOM kill would
KILLED_RUN = """
import os, signal, sys
from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.executor import NetworkOptions, WindowTarget, fetch_window
from tests.support.secrets import sandbox_secrets

profiles, ref, out = sys.argv[1:4]
resolved = ProfileCatalog.load(profiles).resolve(parse_ref(ref))
window = Window.parse("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")

def die(event):
    if getattr(event, "page", 0) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

fetch_window(resolved, window, build_plan(resolved, window), target=WindowTarget.at(out),
             network=NetworkOptions("dev", sandbox_secrets()), on_progress=die)
"""


def test_a_sigkilled_runs_temp_file_is_removed_by_the_next_fetch(live: Live) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(live.profiles_dir), ref_text("tickets"),
         str(live.out)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = files_under(live.out, ".*.tmp")
    assert len(left) == 1 and files_under(live.out, "*.parquet") == []
    result = live.fetch("tickets", DAY)
    assert files_under(live.out, ".*.tmp") == []
    assert written_ids(result) == live.truth_ids("tickets", DAY)


def test_staging_of_finished_windows_is_removed(live: Live) -> None:
    progress: list[PageProgress] = []
    live.sandbox.faults.add(Fault("status", endpoint="/v1/tickets", status=503, on_request=3,
                                  times=None))
    with pytest.raises(UpstreamUnavailable):
        live.fetch("tickets", DAY, on_page=progress.append)
    staging = live.out / ".staging"
    assert files_under(staging, "*.arrow")  # the killed window's pages wait for a resume
    live.sandbox.faults.clear()
    live.fetch("tickets", DAY)  # fetched again without a resume (as the CLI does)
    assert files_under(staging, "*") == []  # pages and their emptied folders are gone
    live.fetch("orders", DAY, on_page=progress.append)  # a resumable window that finishes
    assert files_under(staging, "*") == []


def test_window_files_record_their_plan(live: Live) -> None:
    result = live.fetch("orders", DAY)
    storage = Storage.parse(str(live.out))
    relative = window_file_name(live.resolve("orders"), DAY, None)
    assert storage.plan_hash_at(relative) == result.plan_hash
    assert storage.plan_hash_at(relative.replace(".parquet", "-none.parquet")) is None


@pytest.mark.parametrize("kind", ["file", "proc"])
def test_an_unwritable_destination_fails_before_any_request(live: Live, tmp_path: Path,
                                                            kind: str) -> None:
    if kind == "file":
        dest = tmp_path / "a-file"
        dest.write_text("not a folder")
    else:
        dest = Path("/proc/self/chartly-out")
    with pytest.raises(PreconditionFailed) as info:
        live.fetch("orders", DAY, dest=dest)
    assert str(dest) in info.value.message and info.value.field == "destination"
    assert live.sandbox.request_count() == 0


# -- determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_same_window_twice_same_hash_and_rows(live: Live, name: str, tmp_path: Path) -> None:
    first = live.fetch(name, DAY, dest=tmp_path / "a")
    second = live.fetch(name, DAY, dest=tmp_path / "b")
    assert first.content_hash == second.content_hash
    one, two = read_window_file(first.uri), read_window_file(second.uri)
    assert rows_without_wall_clock(one) == rows_without_wall_clock(two)
    assert content_hash(one) == first.content_hash
    assert first.checkpoint.to_contract()["payload"] == second.checkpoint.to_contract()["payload"]
    # Only wall-clock dependent fields may differ (file size: collected_at compresses
    # differently).
    volatile = {"duration_seconds": 0, "output": "", "file_bytes": 0}
    assert first.results_section() | volatile == second.results_section() | volatile


def test_resumed_window_has_the_same_hash_as_an_uninterrupted_one(live: Live,
                                                                  tmp_path: Path) -> None:
    whole = live.fetch("tickets", DAY, dest=tmp_path / "whole")
    progress: list[PageProgress] = []
    live.sandbox.clear_requests()
    live.sandbox.faults.add(Fault("status", endpoint="/v1/tickets", status=503, on_request=5,
                                  times=4))
    with pytest.raises(UpstreamUnavailable):
        live.fetch("tickets", DAY, dest=tmp_path / "split", on_page=progress.append)
    assert len(progress) == 4
    resumed = live.fetch("tickets", DAY, dest=tmp_path / "split",
                         resume=last_resume(progress))
    assert resumed.content_hash == whole.content_hash
    assert rows_without_wall_clock(read_window_file(resumed.uri)) == \
        rows_without_wall_clock(read_window_file(whole.uri))


def test_rewriting_a_window_replaces_the_file(live: Live) -> None:
    first = live.fetch("orders", DAY)
    second = live.fetch("orders", DAY)
    assert first.uri == second.uri
    assert len(files_under(live.out, "*.parquet")) == 1
    assert files_under(live.out, "*.tmp") == []
    assert content_hash(read_window_file(second.uri)) == second.content_hash


# -- destinations -------------------------------------------------------------------------

def test_a_destination_is_parsed_once_into_paths_and_uris(tmp_path: Path) -> None:
    local = Storage.parse(str(tmp_path / "out"))
    assert local.is_local and local.root == str((tmp_path / "out").resolve())
    uri = local.uri_of(local.path_of("t/p/c/x y.parquet"))
    assert uri == (tmp_path / "out" / "t/p/c/x y.parquet").resolve().as_uri()
    assert Storage.parse(uri).root == str((tmp_path / "out" / "t/p/c/x y.parquet").resolve())
    assert local.staging_root() == Path(local.root) / ".staging"
    remote = Storage.parse("memory://user:hunter22@bucket/prefix")
    assert not remote.is_local and "hunter22" not in remote.display
    assert remote.uri_of(remote.path_of("a.parquet")).startswith("memory://")


def test_an_unsupported_destination_is_a_usage_error_naming_the_setting() -> None:
    with pytest.raises(UsageError) as info:
        Storage.parse("nosuchfs://bucket/x", field="--output")
    assert info.value.field == "--output" and "'nosuchfs://bucket/x'" in info.value.message


def test_a_plan_of_another_profile_is_refused(live: Live) -> None:
    with pytest.raises(ValueError, match="another resolved profile"):
        fetch_window(live.resolve("tickets"), DAY, build_plan(live.resolve("orders"), DAY),
                     target=WindowTarget.at(str(live.out)), network=NetworkOptions("dev"))
    assert live.sandbox.request_count() == 0
