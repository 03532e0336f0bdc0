"""No silent loss: every window ends explicitly, declared totals are checked, and a profile
that does not match its API fails with an error naming the profile key to fix.

Each guard runs against a sandbox endpoint that behaves like a real API a careless profile
loses data with (issue 10): a cursor under another name, Link headers only with a page
parameter, a server-side result cap, a total only in a header, millisecond times with an
inclusive end, an error inside a 200, records that are rows. Through the runtime here and
through `run --apply` (exit codes) at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartly_dagster.cli.main import main
from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.errors import (
    IncompleteWindow,
    InvalidArgument,
    PossiblyTruncated,
    ProfileMismatch,
)
from chartly_dagster.core.plan import Limits, build_plan
from chartly_dagster.core.refs import parse_ref
from chartly_dagster.core.windows import Window
from chartly_dagster.runtime.executor import (
    NetworkOptions,
    Seams,
    WindowResult,
    WindowTarget,
    fetch_window,
)
from chartly_dagster.runtime.paginate import EXPLICIT_ENDS
from chartly_dagster.sandbox import Fault, Sandbox, SandboxConfig, run_sandbox
from chartly_dagster.sandbox.endpoints import LOGS_MAX_RESULTS
from tests.support.live import DAY, UNLIMITED_RATE, RecordingSleep, written_ids

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")
NAMESPACE = "tenant-test/proj-guards"
SINCE_UNTIL = {"startParam": "since", "endParam": "until"}
TICKETS_WINDOW = {"startParam": "updated_after", "endParam": "updated_before"}
CURSOR = {"mode": "cursor", "pageSize": 500, "limitParam": "limit", "requestParam": "cursor"}
LINK = {"mode": "link", "pageSize": 100, "limitParam": "per_page"}
#: readings arrive ten per second, so every second holds records between whole seconds
READINGS_PER_HOUR = 36_000

#: name -> (endpoint, records, window, pagination, request); one profile per guard
GUARDS: dict[str, tuple[str, dict, dict, dict, dict]] = {
    "cursor-typo": ("/v2/events", {"path": "items", "idField": "id", "timeField": "occurred_at"},
                    SINCE_UNTIL, {**CURSOR, "responseField": "next_cursor"}, {}),
    "cursor": ("/v2/events", {"path": "items", "idField": "id", "timeField": "occurred_at"},
               SINCE_UNTIL, {**CURSOR, "responseField": "next"}, {}),
    "link-unpaged": ("/v2/tickets", {"idField": "ticket_id", "timeField": "updated_at"},
                     TICKETS_WINDOW, LINK, {}),
    "link-paged": ("/v2/tickets", {"idField": "ticket_id", "timeField": "updated_at"},
                   TICKETS_WINDOW, {**LINK, "totalHeader": "X-Total-Count"},
                   {"params": {"page": 1}}),
    "logs": ("/v1/logs", {"idField": "log_id", "timeField": "logged_at"}, SINCE_UNTIL, LINK, {}),
    "readings": ("/v1/readings", {"path": "data.items", "idField": "reading_id",
                                  "timeField": "measured_at"},
                 {"startParam": "from", "endParam": "to", "endInclusive": True},
                 {**CURSOR, "pageSize": 1000, "responseField": "next_cursor"}, {}),
    "exports": ("/v1/exports", {"path": "data.items", "idField": "export_id",
                                "timeField": "created_at"}, SINCE_UNTIL,
                {**CURSOR, "responseField": "next_cursor", "errorField": "error"},
                {"params": {"format": "objects"}}),
    "exports-big-pages": ("/v1/exports", {"path": "data.items", "idField": "export_id",
                                          "timeField": "created_at"}, SINCE_UNTIL,
                          {**CURSOR, "pageSize": 1000, "responseField": "next_cursor",
                           "errorField": "error"}, {"params": {"format": "objects"}}),
    "exports-rows": ("/v1/exports", {"path": "data.items", "idField": "export_id",
                                     "timeField": "created_at"}, SINCE_UNTIL,
                     {**CURSOR, "responseField": "next_cursor"}, {}),
    "orders-wrong-offset": ("/v2/orders", {"path": "results", "idField": "order_id",
                                           "timeField": "created", "timeFormat": "epoch_s"},
                            {"startParam": "from", "endParam": "to", "format": "epoch_s"},
                            {"mode": "offset", "pageSize": 1000, "limitParam": "limit",
                             "offsetParam": "skip"}, {}),
    "invoices-wrong-page": ("/v1/invoices", {"idField": "invoice_id", "timeField": "issued_at"},
                            {"startParam": "start_date", "endParam": "end_date",
                             "format": "date", "endInclusive": True},
                            {"mode": "page", "pageSize": 500, "limitParam": "per_page",
                             "pageParam": "p"}, {}),
}


def guard_profile(name: str, port: int, *, on_violation: str = "error") -> dict[str, Any]:
    path, records, window, pagination, request = GUARDS[name]
    return {
        "apiVersion": "chartly.io/v1alpha1", "kind": "Profile",
        "metadata": {"kind": "connector", "name": name, "namespace": NAMESPACE,
                     "version": "1.0.0"},
        "spec": {
            "envs": ["dev"],
            "transport": {"baseUrl": f"http://localhost:{port}"},
            "egressPolicy": {"dnsAllowlist": ["localhost"],
                             "allowedCidrs": ["127.0.0.0/8", "::1/128"],
                             "allowedPorts": [port]},
            "request": {"path": path, **request},
            "records": records, "window": window,
            "pagination": {**pagination, "onViolation": on_violation},
            "rateLimit": dict(UNLIMITED_RATE),
            "partitions": {"cadence": "daily", "start": "2026-01-01T00:00:00Z"},
        },
        "variants": {"finding": {"spec": {"pagination": {"onViolation": "finding"}}}},
    }


class Guards:
    """A sandbox (no auth) and one profile per guard pointed at it."""

    def __init__(self, sandbox: Sandbox, folder: Path) -> None:
        self.sandbox = sandbox
        self.profiles = folder / "profiles"
        self.profiles.mkdir(parents=True)
        for name in GUARDS:
            (self.profiles / f"{name}.yaml").write_text(
                yaml.safe_dump(guard_profile(name, sandbox.port), sort_keys=False), "utf-8")
        self.catalog = ProfileCatalog.load(self.profiles)
        self.catalog.raise_for_issues()
        self.out = folder / "out"

    def ref(self, name: str, variant: str | None = None) -> str:
        return f"{NAMESPACE}::connector/{name}@1.0.0" + (f"#{variant}" if variant else "")

    def fetch(self, name: str, window: Window = DAY, variant: str | None = None,
              limits: Limits | None = None) -> WindowResult:
        resolved = self.catalog.resolve(parse_ref(self.ref(name, variant)))
        return fetch_window(resolved, window, build_plan(resolved, window, limits),
                            target=WindowTarget.at(str(self.out)), network=NetworkOptions("dev"),
                            seams=Seams(sleep=RecordingSleep()))

    def truth_ids(self, name: str, window: Window) -> list[str]:
        path, records, *_ = GUARDS[name]
        return [r[records["idField"]] for r in
                self.sandbox.ground_truth(path, window.start, window.end)]


@pytest.fixture(scope="module")
def guards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guards]:
    config = SandboxConfig(rates={"/v1/readings": READINGS_PER_HOUR})
    with run_sandbox(config) as sb:
        yield Guards(sb, tmp_path_factory.mktemp("guards"))


@pytest.fixture
def g(guards: Guards, tmp_path: Path) -> Guards:
    guards.sandbox.faults.clear()
    guards.sandbox.clear_requests()
    guards.out = tmp_path / "out"
    return guards


def assert_complete(g: Guards, name: str, result: WindowResult, window: Window = DAY) -> None:
    assert result.outcome == "complete" and result.findings == []
    assert result.ended_by in EXPLICIT_ENDS
    assert written_ids(result) == g.truth_ids(name, window)


# -- 1. an absent continuation is not an end ----------------------------------------------

def test_absent_cursor_field_names_the_profile_key_and_the_response_keys(g: Guards) -> None:
    with pytest.raises(ProfileMismatch) as info:
        g.fetch("cursor-typo")
    message = info.value.message
    assert info.value.exit_code == 4
    assert "pagination.responseField 'next_cursor'" in message
    assert "top-level keys: items, next" in message
    assert "ev2_" not in message  # names only, never values
    assert list(g.out.rglob("*.parquet")) == []


def test_present_and_null_cursor_is_the_explicit_end(g: Guards) -> None:
    result = g.fetch("cursor")
    assert_complete(g, "cursor", result)
    assert result.ended_by == "empty_continuation" and result.records == 1440


def test_link_mode_full_first_page_without_link_header_is_a_profile_error(g: Guards) -> None:
    with pytest.raises(ProfileMismatch) as info:
        g.fetch("link-unpaged")
    assert "no Link header on a full first page (100 records)" in info.value.message
    assert "page parameter" in info.value.message
    assert g.sandbox.request_count("/v2/tickets") == 1


def test_link_mode_with_a_page_parameter_ends_on_no_next_link(g: Guards) -> None:
    result = g.fetch("link-paged")
    assert_complete(g, "link-paged", result)
    assert result.ended_by == "no_next_link" and result.pages == 15


def test_a_short_first_page_without_link_header_is_a_short_page_end(g: Guards) -> None:
    window = Window(DAY.start, DAY.start + timedelta(minutes=90))  # 90 records < 100
    result = g.fetch("link-unpaged", window)
    assert_complete(g, "link-unpaged", result, window)
    assert result.ended_by == "short_page" and result.pages == 1


# -- 2. declared totals -----------------------------------------------------------------------

def test_total_in_a_header_matches_the_records_fetched(g: Guards) -> None:
    result = g.fetch("link-paged")
    position = result.checkpoint.position
    assert position["total"] == position["fetched"] == 1440


def test_total_in_a_header_catches_a_silently_skipped_record(g: Guards) -> None:
    g.sandbox.faults.add(Fault("skip", endpoint="/v2/tickets", on_request=3))
    with pytest.raises(IncompleteWindow) as info:
        g.fetch("link-paged")
    assert info.value.code == "incomplete_window" and info.value.exit_code == 4
    assert "pagination.totalHeader 'X-Total-Count'" in info.value.message
    assert "expected 1440, got 1439" in info.value.message
    assert list(g.out.rglob("*.parquet")) == []


def test_incomplete_window_with_finding_policy_keeps_the_records_and_reports(g: Guards) -> None:
    g.sandbox.faults.add(Fault("skip", endpoint="/v2/tickets", on_request=3))
    result = g.fetch("link-paged", variant="finding")
    assert [f["code"] for f in result.findings] == ["incomplete_window"]
    assert result.outcome == "stopped_on_finding" and result.ended_by == "stopped_on_finding"
    assert result.records == 1439


# -- 3. every window ends explicitly ---------------------------------------------------------

def test_a_full_last_page_without_an_explicit_end_is_possibly_truncated(g: Guards) -> None:
    with pytest.raises(PossiblyTruncated) as info:
        g.fetch("logs")
    assert info.value.code == "possibly_truncated" and info.value.exit_code == 4
    assert "full page (100 records)" in info.value.message
    assert g.sandbox.request_count("/v1/logs") == LOGS_MAX_RESULTS // 100
    assert list(g.out.rglob("*.parquet")) == []


def test_possibly_truncated_with_finding_policy_is_a_finding(g: Guards) -> None:
    result = g.fetch("logs", variant="finding")
    assert [f["code"] for f in result.findings] == ["possibly_truncated"]
    assert result.ended_by == "stopped_on_finding"
    assert written_ids(result) == g.truth_ids("logs", DAY)[:LOGS_MAX_RESULTS]


def test_a_window_under_the_result_cap_ends_on_a_short_page(g: Guards) -> None:
    window = Window(DAY.start, DAY.start + timedelta(hours=6))  # 360 records
    result = g.fetch("logs", window)
    assert_complete(g, "logs", result, window)
    assert result.ended_by == "short_page"


@pytest.mark.parametrize(("limit", "ended_by"), [("--max-pages", "cap:maxPages"),
                                                 ("--max-records", "cap:maxRecords"),
                                                 ("--max-bytes", "cap:maxBytes")])
def test_caps_are_recorded_as_how_the_window_ended(g: Guards, limit: str,
                                                   ended_by: str) -> None:
    from chartly_dagster.core.plan import Limits

    value = {"--max-pages": 2, "--max-records": 700, "--max-bytes": 1}[limit]
    field = limit.removeprefix("--").replace("-", "_")
    result = g.fetch("cursor", limits=Limits(**{field: value}))
    assert result.outcome == "capped" and result.ended_by == ended_by


# -- errors that point at the cause ----------------------------------------------------------

def test_error_field_in_a_200_fails_the_page_with_its_message(g: Guards) -> None:
    with pytest.raises(InvalidArgument) as info:
        g.fetch("exports-big-pages")
    assert info.value.field == "pagination.errorField"
    assert "pagination.errorField 'error'" in info.value.message
    assert info.value.message.endswith("limit must be <= 500")
    assert list(g.out.rglob("*.parquet")) == []


def test_a_null_error_field_is_no_error(g: Guards) -> None:
    result = g.fetch("exports")
    assert_complete(g, "exports", result)


def test_records_that_are_arrays_say_so(g: Guards) -> None:
    with pytest.raises(ProfileMismatch) as info:
        g.fetch("exports-rows")
    assert info.value.message == ("record 0 is an array, not an object: the API may need a "
                                  "parameter to return objects")
    assert info.value.field == "records.path"


@pytest.mark.parametrize(("name", "key", "param"), [
    ("orders-wrong-offset", "pagination.offsetParam", "skip"),
    ("invoices-wrong-page", "pagination.pageParam", "p"),
])
def test_a_repeated_first_page_names_the_position_parameter(g: Guards, name: str, key: str,
                                                            param: str) -> None:
    with pytest.raises(ProfileMismatch) as info:
        g.fetch(name)
    assert info.value.field == key
    assert f"ignores {key} {param!r}" in info.value.message
    assert "duplicated" not in info.value.message


# -- 6. exact window edges ----------------------------------------------------------------------

def _boundary(g: Guards, on_a_record: bool) -> datetime:
    """A whole second on 2026-02-01 with a record exactly on it, or a record in the
    half-second before it."""
    stream = g.sandbox.config.stream("/v1/readings")
    i = stream.first_index_at_or_after(int(DAY.start.timestamp()) + 3600)
    while True:
        ms = stream.ticks_of(i)
        if on_a_record and ms % 1000 == 0:
            return datetime.fromtimestamp(ms // 1000, UTC)
        if not on_a_record and ms % 1000 >= 500:
            return datetime.fromtimestamp(ms // 1000 + 1, UTC)
        i += 1


@pytest.mark.parametrize("on_a_record", [False, True], ids=["record-just-before", "record-on"])
def test_inclusive_end_loses_nothing_between_end_minus_one_second_and_end(
        g: Guards, on_a_record: bool) -> None:
    edge = _boundary(g, on_a_record)
    left = Window(edge - timedelta(minutes=5), edge)
    right = Window(edge, edge + timedelta(minutes=5))
    first, second = g.fetch("readings", left), g.fetch("readings", right)
    assert_complete(g, "readings", first, left)
    assert_complete(g, "readings", second, right)
    truth = g.sandbox.ground_truth("/v1/readings", left.start, right.end)
    assert written_ids(first) + written_ids(second) == [r["reading_id"] for r in truth]
    last = datetime.fromisoformat(truth[len(written_ids(first)) - 1]["measured_at"])
    if on_a_record:
        # the inclusive upstream also returned the record at the end: dropped here, kept
        # by the next window
        assert first.dropped_out_of_window == 1
        assert datetime.fromisoformat(truth[len(written_ids(first))]["measured_at"]) == edge
    else:
        assert edge - timedelta(seconds=1) < last < edge and last.microsecond
    sent = [q for _, path, q in g.sandbox.request_log if path == "/v1/readings"]
    assert sent[0]["to"] == edge.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- through the CLI -------------------------------------------------------------------------------

def _run_cli(g: Guards, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             variant: str | None = None) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["connector-tester", "run", "--env", "dev", "--tenant", "tenant-test",
                 "--project", "proj-guards", "--connector-profile", g.ref(name, variant),
                 "--profiles-dir", str(g.profiles), "--apply", "--output", str(tmp_path),
                 "--window-start", "2026-02-01T00:00:00Z",
                 "--window-end", "2026-02-02T00:00:00Z"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.parametrize(("name", "code", "error"), [
    ("cursor-typo", 4, "profile_mismatch"),
    ("link-unpaged", 4, "profile_mismatch"),
    ("logs", 4, "possibly_truncated"),
    ("exports-big-pages", 4, "invalid_argument"),
    ("exports-rows", 4, "profile_mismatch"),
    ("orders-wrong-offset", 4, "profile_mismatch"),
])
def test_cli_run_fails_each_guard_with_its_code(g: Guards, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], name: str,
                                                code: int, error: str) -> None:
    exit_code, doc = _run_cli(g, name, tmp_path, capsys)
    assert exit_code == code
    assert doc["validation"]["code"] == error
    assert list(tmp_path.rglob("*.parquet")) == []


def test_cli_run_reports_how_the_window_ended(g: Guards, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _run_cli(g, "link-paged", tmp_path, capsys)
    assert code == 0
    assert doc["results"]["ended_by"] == "no_next_link"
    assert doc["results"]["outcome"] == "complete"


def test_cli_run_incomplete_window_under_finding_policy_exits_4(
        g: Guards, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g.sandbox.faults.add(Fault("skip", endpoint="/v2/tickets", on_request=2))
    code, doc = _run_cli(g, "link-paged", tmp_path, capsys, variant="finding")
    assert code == 4
    assert [f["code"] for f in doc["validation"]["findings"]] == ["incomplete_window"]
    assert doc["results"]["ended_by"] == "stopped_on_finding"
