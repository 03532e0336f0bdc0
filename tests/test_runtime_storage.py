"""Window files: caps, no partial file after a crash, resume after the last checkpointed
page, determinism of content and hash, and the resume contract the Dagster assets use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chartly_dagster.core.errors import UpstreamUnavailable
from chartly_dagster.core.plan import Limits
from chartly_dagster.runtime.envelope_arrow import content_hash
from chartly_dagster.runtime.executor import PageProgress
from chartly_dagster.runtime.storage import read_window_file
from chartly_dagster.sandbox import Fault
from tests.fixtures_runtime import (
    DAY,
    PROFILES,
    Live,
    files_under,
    last_resume,
    rows_without_wall_clock,
    written_ids,
)

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")
ALL = sorted(PROFILES)


# -- caps ---------------------------------------------------------------------------------

def test_max_pages_caps_the_window(live: Live) -> None:
    result = live.fetch("sales-feed", DAY, limits=Limits(max_pages=2))
    assert result.outcome == "capped" and result.pages == 2
    assert result.findings == [{"code": "cap_reached", "message":
                                "max_pages 2 reached with more pages to fetch"}]
    assert written_ids(result) == live.truth_ids("sales-feed", DAY)[:500]  # 2 x 250
    assert live.sandbox.request_count("/v1/feed") == 2


def test_max_records_cuts_mid_page(live: Live) -> None:
    result = live.fetch("sales-events", DAY, limits=Limits(max_records=700))
    assert result.outcome == "capped" and result.records == 700
    assert [f["code"] for f in result.findings] == ["cap_reached"]
    assert "max_records 700" in result.findings[0]["message"]
    assert written_ids(result) == live.truth_ids("sales-events", DAY)[:700]
    assert live.sandbox.request_count("/v1/events") == 2


def test_max_bytes_caps_after_the_page_that_crossed_it(live: Live) -> None:
    result = live.fetch("tickets", DAY, limits=Limits(max_bytes=1))
    assert result.outcome == "capped" and result.pages == 1
    assert "max_bytes 1" in result.findings[0]["message"]
    assert written_ids(result) == live.truth_ids("tickets", DAY)[:100]


def test_limits_equal_to_the_window_do_not_cap(live: Live) -> None:
    result = live.fetch("sales-events", DAY, limits=Limits(max_pages=3, max_records=1440))
    assert result.outcome == "complete" and result.findings == []


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


def test_resume_without_staged_pages_starts_over(live: Live, tmp_path: Path) -> None:
    progress: list[PageProgress] = []
    live.sandbox.faults.add(Fault("status", endpoint="/v1/feed", status=503, on_request=3,
                                  times=None))
    with pytest.raises(UpstreamUnavailable):
        live.fetch("sales-feed", DAY, on_page=progress.append)
    live.sandbox.faults.clear()
    # Another machine: same checkpoint, but the staged pages are not there.
    result = live.fetch("sales-feed", DAY, resume=last_resume(progress),
                        dest=tmp_path / "elsewhere")
    assert written_ids(result) == live.truth_ids("sales-feed", DAY)


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
    assert content_hash(read_window_file(second.uri)) == second.content_hash
