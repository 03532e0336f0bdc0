"""Every pagination style against the sandbox: written records equal the ground truth.

Full day, a window that splits pages and days mid-way, and a window with no records; then
the pagination invariants under injected faults (stuck cursor, duplicates, skips).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chartly_dagster.core.errors import ExitCode, PaginationViolation, PossiblyTruncated
from chartly_dagster.core.plan import build_plan
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.paginate import PageInfo, PageRequest, Paginator
from chartly_dagster.runtime.storage import read_window_file
from chartly_dagster.sandbox import Fault
from tests.support.live import DAY, PROFILES, SPLIT, Live, gap_window, live_sandbox, written_ids
from tests.support.sandbox import sandbox_config

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")
ALL = sorted(PROFILES)
#: styles where the upstream hands out the continuation (cursor, next URL, Link)
UPSTREAM_CONTINUATION = ["sales-events", "sales-feed", "tickets"]


def assert_matches_truth(live: Live, name: str, result, window) -> list[str]:
    ids = written_ids(result)
    truth = live.truth_ids(name, window)
    assert len(ids) == len(set(ids)), "duplicates written"
    assert ids == truth, f"{name}: written ids differ from the sandbox ground truth"
    assert result.records == len(truth)
    assert result.outcome == "complete"
    assert result.findings == []
    assert result.duplicates == 0
    return ids


#: how each shipped profile's day ends: every one of them explicitly
ENDED_BY = {"sales-events": "empty_continuation", "sales-feed": "empty_continuation",
            "orders": "short_page", "invoices": "short_page", "metrics": "last_slice",
            "tickets": "no_next_link"}


@pytest.mark.parametrize("name", ALL)
def test_full_day_equals_ground_truth(live: Live, name: str) -> None:
    result = live.fetch(name, DAY)
    assert_matches_truth(live, name, result, DAY)
    assert result.ended_by == ENDED_BY[name]
    assert len(written_ids(result)) == 1440  # 60 events/hour
    assert result.pages >= 2 and result.requests == result.pages
    assert result.dropped_out_of_window == 0
    assert result.retries == 0


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """300 events/hour: a 3.4-hour window spans several pages of every style."""
    yield from live_sandbox(tmp_path_factory.mktemp("busy"), sandbox_config(events_per_hour=300))


@pytest.mark.parametrize("name", ALL)
def test_window_splitting_pages_equals_ground_truth(busy: Live, name: str,
                                                    tmp_path: Path) -> None:
    busy.reset(tmp_path)
    result = busy.fetch(name, SPLIT)
    ids = assert_matches_truth(busy, name, result, SPLIT)
    assert len(ids) > 900
    table = read_window_file(result.uri)
    occurred = table.column("occurred_at").to_pylist()
    assert min(occurred) >= SPLIT.start and max(occurred) < SPLIT.end
    if name == "invoices":
        # The endpoint only takes whole (inclusive) days: the rest of the day is dropped.
        day_total = len(busy.truth(name, DAY))
        assert result.dropped_out_of_window == day_total - len(ids) > 0
    else:
        assert result.dropped_out_of_window == 0
    if name != "metrics":
        assert result.pages >= 2


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One event per hour on every endpoint, so 20-minute windows without events exist."""
    rates = {path: 1 for _, _, path in PROFILES.values()}
    yield from live_sandbox(tmp_path_factory.mktemp("sparse"), sandbox_config(rates=rates))


@pytest.mark.parametrize("name", ALL)
def test_window_without_records(sparse: Live, name: str, tmp_path: Path) -> None:
    sparse.reset(tmp_path)
    stream = sparse.sandbox.config.stream(PROFILES[name][2])
    window = gap_window(stream, datetime(2026, 2, 1, tzinfo=UTC))
    assert sparse.truth(name, window) == []
    result = sparse.fetch(name, window)
    assert result.outcome == "complete" and result.records == 0
    assert read_window_file(result.uri).num_rows == 0
    assert result.watermark is None
    if name == "invoices":  # the whole day came back and all of it lay outside
        assert result.dropped_out_of_window == len(sparse.truth(name, DAY)) > 0
    else:
        assert result.dropped_out_of_window == 0


# -- invariants ---------------------------------------------------------------------------

def finding_variant(live: Live, name: str) -> str:
    return live.add_variant(name, "devfinding", {"pagination": {"onViolation": "finding"}})


@pytest.mark.parametrize("name", UPSTREAM_CONTINUATION)
def test_stuck_cursor_fails_the_window(live: Live, name: str) -> None:
    live.sandbox.faults.add(Fault("stuck_cursor", endpoint=PROFILES[name][2], on_request=2))
    with pytest.raises(PaginationViolation) as info:
        live.fetch(name, DAY)
    assert info.value.exit_code == ExitCode.VALIDATION_FAILED == 4
    assert "does not advance" in info.value.message
    assert list(live.out.rglob("*.parquet")) == []
    assert live.sandbox.request_count(PROFILES[name][2]) == 2


@pytest.mark.parametrize("name", UPSTREAM_CONTINUATION)
def test_stuck_cursor_with_finding_policy_stops_cleanly(live: Live, name: str) -> None:
    variant = finding_variant(live, name)
    live.sandbox.faults.add(Fault("stuck_cursor", endpoint=PROFILES[name][2], on_request=2))
    result = live.fetch(name, DAY, variant=variant)
    assert result.outcome == "stopped_on_finding"
    assert [f["code"] for f in result.findings] == ["pagination_violation"]
    assert result.pages == 2
    ids = written_ids(result)
    # Both pages that were served are kept, and they are the first records of the window.
    assert ids == live.truth_ids(name, DAY)[:len(ids)]
    assert len(ids) == len(set(ids)) == result.records > 0


@pytest.mark.parametrize("name", ALL)
def test_duplicate_across_pages_fails_the_window(live: Live, name: str) -> None:
    live.sandbox.faults.add(Fault("duplicate", endpoint=PROFILES[name][2], on_request=2))
    with pytest.raises(PaginationViolation) as info:
        live.fetch(name, DAY)
    assert info.value.exit_code == 4
    assert list(live.out.rglob("*.parquet")) == []


@pytest.mark.parametrize("name", ["sales-events", "sales-feed", "orders", "tickets", "metrics"])
def test_duplicate_with_finding_policy_is_dropped_and_reported(live: Live, name: str) -> None:
    variant = finding_variant(live, name)
    live.sandbox.faults.add(Fault("duplicate", endpoint=PROFILES[name][2], on_request=2))
    result = live.fetch(name, DAY, variant=variant)
    assert result.duplicates == 1
    # orders declares a total: 1,441 records served for 1,440 declared is reported too
    extra = ["incomplete_window"] if name == "orders" else []
    assert [f["code"] for f in result.findings] == ["duplicate_record_id", *extra]
    assert written_ids(result) == live.truth_ids(name, DAY)  # exactly once each


@pytest.mark.parametrize("name", ["invoices"])
def test_duplicate_with_finding_policy_oversized_page_stops(live: Live, name: str) -> None:
    """A full page plus the repeated record is larger than pageSize: a violation."""
    variant = finding_variant(live, name)
    live.sandbox.faults.add(Fault("duplicate", endpoint=PROFILES[name][2], on_request=2))
    result = live.fetch(name, DAY, variant=variant)
    assert result.outcome == "stopped_on_finding"
    codes = sorted(f["code"] for f in result.findings)
    assert codes == ["duplicate_record_id", "pagination_violation"]
    assert result.duplicates == 1 and result.pages == 2
    ids = written_ids(result)
    assert ids == live.truth_ids(name, DAY)[:400]


def test_skip_on_a_short_offset_page_is_detected_against_the_total(live: Live) -> None:
    """orders declares a total: a short first page (a skipped record) cannot end the window."""
    live.sandbox.faults.add(Fault("skip", endpoint="/v2/orders", on_request=1))
    with pytest.raises(PaginationViolation) as info:
        live.fetch("orders", DAY)
    assert "total" in info.value.message
    assert list(live.out.rglob("*.parquet")) == []


@pytest.mark.parametrize("name", ["sales-events", "sales-feed", "tickets"])
def test_skip_in_cursor_styles_is_invisible_to_the_runtime(live: Live, name: str) -> None:
    """A documented limit: without a declared total, a page that silently drops a record
    while advancing the cursor looks valid. Only a comparison with the source (as here,
    the sandbox ground truth) shows the hole."""
    live.sandbox.faults.add(Fault("skip", endpoint=PROFILES[name][2], on_request=2))
    result = live.fetch(name, DAY)
    truth = live.truth_ids(name, DAY)
    ids = written_ids(result)
    assert result.outcome == "complete" and result.findings == []
    missing = sorted(set(truth) - set(ids))
    assert len(missing) == 1 and len(ids) == len(truth) - 1


def test_page_past_declared_total_is_a_violation(live: Live) -> None:
    """The sandbox's total is always right, so a page past it is fed to the paginator."""
    resolved = live.resolve("orders")
    plan = build_plan(resolved, DAY, None)
    paginator = Paginator(resolved.spec, plan, frozenset())
    paginator.state["offset"] = 2000
    request = PageRequest(plan.steps[0]["url"], {})
    body = {"results": [{"order_id": "ord_1", "created": 0}], "total": 1440}
    with pytest.raises(PaginationViolation, match="past the declared total"):
        paginator.advance(PageInfo(request, body, {}, request.url, body["results"]))


def test_a_full_time_slice_is_possibly_truncated(live: Live) -> None:
    """metrics caps a slice at `limit` records: a slice that fills it may have lost some."""
    variant = live.add_variant("metrics", "devsmall", {"pagination": {"pageSize": 30}})
    with pytest.raises(PossiblyTruncated) as info:
        live.fetch("metrics", DAY, variant=variant)
    assert info.value.code == "possibly_truncated" and info.value.exit_code == 4
    assert "slice 0 returned a full page (30 records)" in info.value.message
    assert "shorten sliceSeconds" in info.value.message


def test_offset_end_exactly_at_the_declared_total_needs_no_empty_page(busy: Live,
                                                                      tmp_path: Path) -> None:
    """A window holding exactly pageSize records ends on `total_reached`, one request."""
    busy.reset(tmp_path)
    stream = busy.sandbox.config.stream("/v2/orders")
    lo = stream.first_index_at_or_after(int(DAY.start.timestamp()))
    end = datetime.fromtimestamp(stream.time_of(lo + 1000 - 1) + 1, UTC)
    window = Window(DAY.start, end)
    assert len(busy.truth("orders", window)) == 1000
    result = busy.fetch("orders", window)
    assert_matches_truth(busy, "orders", result, window)
    assert result.ended_by == "total_reached" and result.requests == 1
