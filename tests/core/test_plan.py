"""Windows and the request plan: explicit UTC windows, bound formats, steps, limits, hashes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest

from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.errors import ExitCode, UsageError
from chartly_dagster.core.plan import Limits, build_plan
from chartly_dagster.core.profile import WindowSpec
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.core.windows import (
    Window,
    count_slices,
    format_bound,
    parse_rfc3339,
    window_params,
)
from tests.support.offline import REF, WINDOW, base_doc, write_profile
from tests.support.paths import PROFILES

DAY = Window.parse(*WINDOW)


# -- windows ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "utc"), [
    ("2026-02-01T00:00:00Z", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-02-01T00:00:00z", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-02-01T00:00:00+00:00", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-02-01T05:30:00+05:30", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-01-31T16:00:00-08:00", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-02-01T00:00:00.250Z", datetime(2026, 2, 1, 0, 0, 0, 250000, tzinfo=UTC)),
])
def test_parse_normalises_offsets_to_utc(text: str, utc: datetime) -> None:
    moment = parse_rfc3339(text, field="window-start")
    assert moment == utc
    assert moment.utcoffset() == timedelta(0)
    assert moment.tzinfo is UTC


@pytest.mark.parametrize("text", [
    "2026-02-01T00:00:00",          # naive
    "2026-02-01T00:00:00.5",        # naive with fraction
])
def test_naive_timestamps_refused(text: str) -> None:
    with pytest.raises(UsageError, match="offset") as info:
        parse_rfc3339(text, field="window-start")
    assert info.value.field == "window-start"
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("text", [
    "", "now", "yesterday", "2026-02-01", "1769904000", "2026-02-30T00:00:00Z",
    "2026-02-01T25:00:00Z", "2026-02-01 00:00:00", "2026-02-01T00:00:00+25:00",
    "20260201T000000Z", "2026-W05-7T00:00:00Z", "2026-02-01T00Z", "-1d",
    "2026-02-01T00:00:00Z\n", " 2026-02-01T00:00:00Z", "2026-02-01T00:00:00.1234567Z",
])
def test_non_rfc3339_refused(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_rfc3339(text, field="window-end")
    assert info.value.field == "window-end"


def test_window_order_and_span() -> None:
    with pytest.raises(UsageError):
        Window.parse("2026-02-02T00:00:00Z", "2026-02-01T00:00:00Z")
    with pytest.raises(UsageError):
        Window.parse("2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z")
    with pytest.raises(UsageError):
        Window.parse("2026-01-01T00:00:00Z", "2027-01-03T00:00:00Z")
    with pytest.raises(UsageError):
        Window(datetime(2026, 2, 1), datetime(2026, 2, 2))
    tz = timezone(timedelta(hours=-5))
    window = Window(datetime(2026, 1, 31, 19, tzinfo=tz), datetime(2026, 2, 1, 19, tzinfo=tz))
    assert window == DAY
    assert window.to_dict() == {"start": "2026-02-01T00:00:00Z", "end": "2026-02-02T00:00:00Z"}
    assert window.contains(datetime(2026, 2, 1, tzinfo=UTC))
    assert not window.contains(datetime(2026, 2, 2, tzinfo=UTC))


def test_slices() -> None:
    hours = DAY.slices(3600)
    assert len(hours) == 24 == count_slices(DAY, 3600)
    assert hours[0] == Window.parse("2026-02-01T00:00:00Z", "2026-02-01T01:00:00Z")
    assert hours[-1].end == DAY.end
    assert all(a.end == b.start for a, b in pairwise(hours))
    uneven = DAY.slices(7 * 3600)
    assert [s.end - s.start for s in uneven] == [timedelta(hours=7)] * 3 + [timedelta(hours=3)]
    assert count_slices(DAY, 7 * 3600) == 4
    assert DAY.slices(86400 * 2) == [DAY]


@pytest.mark.parametrize(("fmt", "inclusive", "start", "end"), [
    ("rfc3339", False, "2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"),
    ("rfc3339", True, "2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"),
    ("epoch_s", False, "1769904000", "1769990400"),
    ("epoch_s", True, "1769904000", "1769990400"),
    ("epoch_ms", False, "1769904000000", "1769990400000"),
    ("epoch_ms", True, "1769904000000", "1769990400000"),
    ("date", False, "2026-02-01", "2026-02-02"),
    ("date", True, "2026-02-01", "2026-02-01"),
])
def test_window_params(fmt: str, inclusive: bool, start: str, end: str) -> None:
    spec = WindowSpec.model_validate({"startParam": "from", "endParam": "to", "format": fmt,
                                      "endInclusive": inclusive})
    assert window_params(DAY, spec) == {"from": start, "to": end}


def test_window_params_only_named_bounds() -> None:
    assert window_params(DAY, WindowSpec()) == {}
    assert window_params(DAY, WindowSpec.model_validate({"startParam": "since"})) == {
        "since": "2026-02-01T00:00:00Z"}


def test_format_bound_before_epoch_and_with_offsets() -> None:
    assert format_bound(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "epoch_s") == "-1"
    ist = timezone(timedelta(hours=5, minutes=30))
    assert format_bound(datetime(2026, 2, 1, 5, 29, tzinfo=ist), "date") == "2026-01-31"


# -- the plan -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalog() -> ProfileCatalog:
    return ProfileCatalog.load(PROFILES)


def _resolve(catalog: ProfileCatalog, name: str, variant: str = ""):
    project = "proj-ops" if name in ("metrics", "tickets") else "proj-sales"
    version = "2.1.0" if name == "orders" else "1.0.0"
    ref = f"tenant-demo/{project}::connector/{name}@{version}" + (f"#{variant}" if variant
                                                                  else "")
    return catalog.resolve(parse_ref(ref))


def test_cursor_plan(catalog: ProfileCatalog) -> None:
    plan = build_plan(_resolve(catalog, "sales-events"), DAY)
    body = plan.body
    assert body["pagination_mode"] == "cursor"
    assert plan.steps == [{
        "index": 0, "method": "GET", "url": "https://api.sales.example.invalid/v1/events",
        "params": {"limit": "500", "since": "2026-02-01T00:00:00Z",
                   "until": "2026-02-02T00:00:00Z"},
        "window": {"start": "2026-02-01T00:00:00Z", "end": "2026-02-02T00:00:00Z"},
    }]
    assert body["continuation"]["source"] == "body_cursor"
    assert body["request"]["header_names"] == ["Accept", "Authorization"]
    assert body["request"]["auth"] == {"mode": "bearer",
                                       "secret_refs": ["secretRef:sales-api/token"]}
    assert body["egress"]["tls_verify"] is True
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", plan.plan_hash)
    assert plan.findings == ()


def test_offset_page_link_and_next_url_plans(catalog: ProfileCatalog) -> None:
    orders = build_plan(_resolve(catalog, "orders"), DAY)
    assert orders.steps[0]["params"] == {"from": "1769904000", "limit": "1000", "offset": "0",
                                         "to": "1769990400"}
    assert orders.body["continuation"]["increment"] == 1000
    assert orders.body["request"]["header_names"] == ["Accept", "X-Api-Key"]
    invoices = build_plan(_resolve(catalog, "invoices"), DAY)
    assert invoices.steps[0]["params"] == {
        "api_key": "<secretRef:billing-api/api-key>", "end_date": "2026-02-01",
        "page": "1", "per_page": "200", "start_date": "2026-02-01"}
    tickets = build_plan(_resolve(catalog, "tickets"), DAY)
    assert tickets.body["continuation"]["source"] == "link_header"
    assert tickets.body["request"]["auth"]["secret_refs"] == [
        "secretRef:helpdesk/password", "secretRef:helpdesk/username"]
    feed = build_plan(_resolve(catalog, "sales-feed"), DAY)
    assert feed.body["continuation"] == {
        "source": "body_next_url", "on_violation": "error", "response_field": "links.next",
        "stop": "next URL field null or empty (absent: profile error)"}


def test_time_window_plan_has_one_step_per_slice(catalog: ProfileCatalog) -> None:
    plan = build_plan(_resolve(catalog, "metrics"), DAY)
    assert [s["index"] for s in plan.steps] == list(range(24))
    assert plan.steps[1]["params"] == {"end": "1769911200000", "limit": "10000",
                                       "start": "1769907600000"}
    assert plan.steps[1]["window"] == {"start": "2026-02-01T01:00:00Z",
                                       "end": "2026-02-01T02:00:00Z"}
    assert plan.findings == ()


def test_time_window_beyond_max_pages_is_a_finding(catalog: ProfileCatalog) -> None:
    plan = build_plan(_resolve(catalog, "metrics"), DAY, Limits(max_pages=5))
    assert len(plan.steps) == 5
    assert plan.findings == ({"code": "validation_failed", "path": "plan.steps",
                              "message": "time-window needs 24 slices but max_pages is 5"},)


def test_limits_only_lower_the_profile_caps(catalog: ProfileCatalog) -> None:
    resolved = _resolve(catalog, "sales-events")
    default = build_plan(resolved, DAY)
    assert default.limits == {"max_pages": 2000, "max_records": 1000000,
                              "max_bytes": 1073741824, "max_payload_bytes": 8388608}
    lowered = build_plan(resolved, DAY, Limits(max_pages=5, max_records=1000, max_bytes=1024))
    assert lowered.limits["max_pages"] == 5
    assert lowered.limits["max_records"] == 1000
    assert lowered.limits["max_bytes"] == 1024
    raised = build_plan(resolved, DAY, Limits(max_pages=10**9, max_records=10**9,
                                              max_bytes=10**15))
    assert raised.limits == default.limits
    assert raised.plan_hash == default.plan_hash
    assert lowered.plan_hash != default.plan_hash


@pytest.mark.parametrize("field", ["max_pages", "max_records", "max_bytes"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits_are_usage_errors(field: str, value: int) -> None:
    with pytest.raises(UsageError) as info:
        Limits(**{field: value})
    assert info.value.field == "--" + field.replace("_", "-")


def test_plan_is_deterministic_and_sensitive(catalog: ProfileCatalog) -> None:
    first = build_plan(_resolve(catalog, "sales-events"), DAY)
    again = build_plan(ProfileCatalog.load(PROFILES).resolve(
        parse_ref("tenant-demo/proj-sales::connector/sales-events@1.0.0")), DAY)
    assert first.body == again.body
    other_window = build_plan(_resolve(catalog, "sales-events"),
                              Window.parse("2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z"))
    variant = build_plan(_resolve(catalog, "sales-events", "dev"), DAY)
    assert len({first.plan_hash, other_window.plan_hash, variant.plan_hash}) == 3


def test_plans_never_carry_secret_values(tmp_path: Path) -> None:
    doc = base_doc()
    doc["spec"]["auth"] = {"mode": "apiKeyHeader", "headerName": "X-Widget-Key",
                           "secretRef": {"name": "widgets-api", "key": "api-key"}}
    write_profile(tmp_path, doc)
    resolved = ProfileCatalog.load(tmp_path).resolve(parse_ref(REF))
    plan = build_plan(resolved, DAY)
    assert plan.body["request"]["header_names"] == ["Accept", "X-Widget-Key"]
    assert plan.body["request"]["auth"]["secret_refs"] == ["secretRef:widgets-api/api-key"]
    assert "application/json" not in str(plan.body)  # header values stay out of the plan
