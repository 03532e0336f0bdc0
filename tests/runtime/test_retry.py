"""Retry classification end to end: status or network fault → class → retried or not →
final error → exit code, with an injected sleeper (Retry-After and backoff are recorded,
never slept) against the sandbox over loopback HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from chartly_dagster.core.errors import (
    ExitCode,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    UpstreamError,
    UpstreamUnavailable,
)
from chartly_dagster.runtime.retry import classify_status, parse_retry_after
from chartly_dagster.sandbox import Fault
from tests.support.live import DAY, Live, RecordingSleep, written_ids

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")
NAME = "sales-feed"  # six pages a day at 60 events/hour
PATH = "/v1/feed"
PAGES = 6
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)

# status -> (error class, retry class, platform code, exit code, retried)
STATUS_TABLE = {
    429: (RateLimited, "throttled", "rate_limited", ExitCode.VALIDATION_FAILED, True),
    500: (UpstreamUnavailable, "transient", "unavailable", ExitCode.ERROR, True),
    502: (UpstreamUnavailable, "transient", "unavailable", ExitCode.ERROR, True),
    503: (UpstreamUnavailable, "transient", "unavailable", ExitCode.ERROR, True),
    401: (Unauthenticated, "auth", "unauthenticated", ExitCode.VALIDATION_FAILED, False),
    403: (PermissionDenied, "auth", "permission_denied", ExitCode.VALIDATION_FAILED, False),
    400: (InvalidArgument, "permanent", "invalid_argument", ExitCode.VALIDATION_FAILED, False),
    404: (InvalidArgument, "permanent", "invalid_argument", ExitCode.VALIDATION_FAILED, False),
}


@pytest.mark.parametrize("status", sorted(STATUS_TABLE))
def test_classify_status_table(status: int) -> None:
    cls, retry_class, platform, exit_code, _ = STATUS_TABLE[status]
    error = classify_status(status, {}, "http://x.invalid/", NOW)
    assert type(error) is cls
    assert error.retry_class == retry_class and error.platform_code == platform
    assert error.exit_code == exit_code and error.status == status
    assert classify_status(200, {}, "http://x.invalid/", NOW) is None


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    date = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, NOW) == 30.0
    past = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize("status", sorted(STATUS_TABLE))
def test_status_persisting_on_page_two(live: Live, status: int) -> None:
    cls, retry_class, platform, exit_code, retried = STATUS_TABLE[status]
    live.sandbox.faults.add(Fault("status", endpoint=PATH, status=status, on_request=2,
                                  times=None))
    sleep = RecordingSleep()
    with pytest.raises(UpstreamError) as info:
        live.fetch(NAME, DAY, sleep=sleep)
    error = info.value
    assert type(error) is cls and error.retry_class == retry_class
    assert error.platform_code == platform and error.exit_code == exit_code
    attempts = 4 if retried else 1  # maxAttempts defaults to 4
    assert live.sandbox.request_count(PATH) == 1 + attempts
    assert len(sleep.calls) == attempts - 1
    assert list(live.out.rglob("*.parquet")) == []


@pytest.mark.parametrize(("fault", "expected_sleep"), [
    (Fault("status", endpoint=PATH, status=429, retry_after_s=7, on_request=2), (7.0, 7.0)),
    (Fault("status", endpoint=PATH, status=429, retry_after_s=9,
           retry_after_format="http-date", on_request=2), (7.9, 9.0)),
    (Fault("status", endpoint=PATH, status=503, retry_after_s=3, on_request=2), (3.0, 3.0)),
    (Fault("status", endpoint=PATH, status=500, on_request=2), (0.25, 0.5)),
    (Fault("status", endpoint=PATH, status=502, on_request=2), (0.25, 0.5)),
    (Fault("reset", endpoint=PATH, on_request=2), (0.25, 0.5)),
    (Fault("truncated", endpoint=PATH, on_request=2), (0.25, 0.5)),
    (Fault("malformed", endpoint=PATH, on_request=2), (0.25, 0.5)),
], ids=["429-seconds", "429-http-date", "503-retry-after", "500", "502", "reset",
        "truncated", "malformed"])
def test_fail_once_then_succeed(live: Live, fault: Fault,
                                expected_sleep: tuple[float, float]) -> None:
    live.sandbox.faults.add(fault)
    sleep = RecordingSleep()
    result = live.fetch(NAME, DAY, sleep=sleep)
    assert fault.fired == 1
    assert result.outcome == "complete" and result.retries == 1
    assert result.requests == PAGES + 1 and result.pages == PAGES
    assert written_ids(result) == live.truth_ids(NAME, DAY)
    assert len(sleep.calls) == 1
    low, high = expected_sleep
    assert low <= sleep.calls[0] <= high  # Retry-After honoured; else jittered 500 ms backoff


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_bad_json_that_persists_is_invalid_argument(live: Live, kind: str) -> None:
    live.sandbox.faults.add(Fault(kind, endpoint=PATH, on_request=1, times=None))
    with pytest.raises(InvalidArgument) as info:
        live.fetch(NAME, DAY)
    assert "not valid JSON" in info.value.message
    assert info.value.exit_code == 4
    assert live.sandbox.request_count(PATH) == 4


def test_reset_that_persists_is_unavailable(live: Live) -> None:
    live.sandbox.faults.add(Fault("reset", endpoint=PATH, on_request=1, times=None))
    with pytest.raises(UpstreamUnavailable) as info:
        live.fetch(NAME, DAY)
    assert info.value.exit_code == ExitCode.ERROR
    assert "network error" in info.value.message
    assert live.sandbox.request_count(PATH) == 4


def test_slow_response_past_the_timeout_is_retried(live: Live) -> None:
    variant = live.add_variant(NAME, "devslow", {"transport": {"timeoutMs": 150}})
    live.sandbox.faults.add(Fault("slow", endpoint=PATH, delay_ms=600, on_request=1))
    sleep = RecordingSleep()
    result = live.fetch(NAME, DAY, variant=variant, sleep=sleep)
    assert result.retries == 1 and result.outcome == "complete"
    assert written_ids(result) == live.truth_ids(NAME, DAY)


def test_retry_after_beyond_the_allowed_wait_is_not_retried(live: Live) -> None:
    live.sandbox.faults.add(Fault("status", endpoint=PATH, status=429, retry_after_s=3600,
                                  on_request=1))
    sleep = RecordingSleep()
    with pytest.raises(RateLimited) as info:
        live.fetch(NAME, DAY, sleep=sleep)
    assert info.value.retry_after == 3600
    assert info.value.exit_code == 4
    assert sleep.calls == [] and live.sandbox.request_count(PATH) == 1


def test_budget_exhaustion_stops_within_one_request(live: Live) -> None:
    variant = live.add_variant(NAME, "devbudget",
                               {"retry": {"maxAttempts": 10, "budgetPerWindow": 2}})
    live.sandbox.faults.add(Fault("status", endpoint=PATH, status=503, times=None))
    sleep = RecordingSleep()
    with pytest.raises(UpstreamUnavailable):
        live.fetch(NAME, DAY, variant=variant, sleep=sleep)
    assert live.sandbox.request_count(PATH) == 3  # first try + the two budgeted retries
    assert len(sleep.calls) == 2


def test_budget_is_shared_by_every_page_of_the_window(live: Live) -> None:
    variant = live.add_variant(NAME, "devbudget",
                               {"retry": {"maxAttempts": 10, "budgetPerWindow": 2}})
    # Every page fails on its first attempt and succeeds on the retry.
    live.sandbox.faults.add(Fault("status", endpoint=PATH, status=503, every=2, times=None))
    with pytest.raises(UpstreamUnavailable):
        live.fetch(NAME, DAY, variant=variant)
    assert live.sandbox.request_count(PATH) == 5  # pages 1-2 cost two requests each


def test_backoff_is_bounded_and_jittered(live: Live) -> None:
    variant = live.add_variant(NAME, "devbackoff", {"retry": {
        "maxAttempts": 8, "backoffMs": 100, "maxBackoffMs": 400, "budgetPerWindow": 50},
        "rateLimit": {"maxRequestsPerMinute": 60000, "burst": 100}})  # no bucket waits
    live.sandbox.faults.add(Fault("status", endpoint=PATH, status=500, times=7))
    sleep = RecordingSleep()
    result = live.fetch(NAME, DAY, variant=variant, sleep=sleep)
    assert result.retries == 7 and result.outcome == "complete"
    ceilings = [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert len(sleep.calls) == 7
    for wait, ceiling in zip(sleep.calls, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling
