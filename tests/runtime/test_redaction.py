"""Secrets never leave the client on failure paths; audit and metrics records are emitted.

Each failure runs with DEBUG logging everywhere (httpx and httpcore included) and the
known secret values are searched for in every log record, the exception chain, and
everything a result carries.
"""

from __future__ import annotations

import base64
import logging
import time
import traceback
from typing import Any

import pytest

from chartly_dagster.core.errors import ChartlyError, Unauthenticated, UpstreamUnavailable
from chartly_dagster.runtime.errors import EgressRefused
from chartly_dagster.runtime.executor import PageProgress
from chartly_dagster.sandbox import Fault
from tests.support.live import ALL_SECRETS, DAY, PROFILES, Live
from tests.support.secrets import SECRETS

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")
BASIC = base64.b64encode(f"{SECRETS[('helpdesk', 'username')]}:"
                         f"{SECRETS[('helpdesk', 'password')]}".encode()).decode()
NEEDLES = (*(s for s in ALL_SECRETS if s != "support-bot"), BASIC)
AUTHED = ["sales-events", "invoices", "tickets", "orders"]


def leaks(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        parts.append(repr(getattr(record, "chartly", "")))
        if record.exc_info and record.exc_info[1] is not None:
            parts.extend(traceback.format_exception(record.exc_info[1]))
    return "\n".join(parts)


def exception_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))  # includes __cause__ / __context__
    if isinstance(exc, ChartlyError):
        text += repr(exc.to_dict())
    return text + repr(exc)


def events(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    return [r.chartly for r in caplog.records if r.name == logger]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "chartly", "chartly.audit", "chartly.metrics"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.mark.parametrize("name", AUTHED)
def test_401_leaks_no_secret(live: Live, debug_logs: pytest.LogCaptureFixture,
                             name: str) -> None:
    live.sandbox.faults.add(Fault("status", endpoint=PROFILES[name][2], status=401,
                                  on_request=2))
    with pytest.raises(Unauthenticated) as info:
        live.fetch(name, DAY)
    assert any("httpcore" in r.name for r in debug_logs.records)  # DEBUG really captured
    assert leaks(exception_text(info.value)) == []
    assert leaks(log_text(debug_logs)) == []


@pytest.mark.parametrize("name", AUTHED)
def test_500_exhaustion_leaks_no_secret(live: Live, debug_logs: pytest.LogCaptureFixture,
                                        name: str) -> None:
    live.sandbox.faults.add(Fault("status", endpoint=PROFILES[name][2], status=500,
                                  on_request=2, times=None))
    progress: list[PageProgress] = []
    with pytest.raises(UpstreamUnavailable) as info:
        live.fetch(name, DAY, on_page=progress.append)
    assert leaks(exception_text(info.value)) == []
    assert leaks(log_text(debug_logs)) == []
    assert leaks(repr([p.checkpoint.to_contract() for p in progress])) == []


@pytest.mark.parametrize("name", AUTHED)
def test_redirect_to_metadata_is_refused_before_connecting(
        live: Live, debug_logs: pytest.LogCaptureFixture, name: str) -> None:
    live.sandbox.faults.add(Fault("redirect", endpoint=PROFILES[name][2], on_request=1,
                                  location="http://169.254.169.254/latest/meta-data/"))
    started = time.monotonic()
    with pytest.raises(EgressRefused) as info:
        live.fetch(name, DAY)
    assert time.monotonic() - started < 2  # no connect attempt to an unreachable address
    assert info.value.exit_code == 4
    assert live.sandbox.request_count(PROFILES[name][2]) == 1
    assert not any("169.254.169.254" in r.getMessage() and "connect" in r.getMessage()
                   for r in debug_logs.records if r.name.startswith("httpcore"))
    assert leaks(exception_text(info.value)) == []
    assert leaks(log_text(debug_logs)) == []
    failed = [e for e in events(debug_logs, "chartly.audit")
              if e["event"] == "connector.run.failed"]
    assert failed and failed[0]["code"] == "egress_refused"


def test_successful_query_key_run_keeps_the_key_out_of_everything(
        live: Live, debug_logs: pytest.LogCaptureFixture) -> None:
    """invoices sends its key as a query parameter: not in provenance, results or logs."""
    result = live.fetch("invoices", DAY)
    from chartly_dagster.runtime.storage import read_window_file

    table = read_window_file(result.uri)
    assert leaks(repr(result.results_section())) == []
    assert leaks(repr(result)) == []
    assert leaks("\n".join(table.column("provenance_uri").unique().to_pylist())) == []
    assert leaks(log_text(debug_logs)) == []


def test_audit_and_metrics_for_a_successful_run(live: Live,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chartly")
    live.sandbox.faults.add(Fault("status", endpoint="/v1/feed", status=503, on_request=2))
    result = live.fetch("sales-feed", DAY)
    audit = events(caplog, "chartly.audit")
    assert [e["event"] for e in audit] == ["connector.profile.resolved",
                                           "connector.run.started", "connector.run.succeeded"]
    ref = "tenant-demo/proj-sales::connector/sales-feed@1.0.0#dev"
    assert all(e["ref"] == ref for e in audit)
    assert audit[0]["resolved_hash"] == result.resolved_hash
    assert audit[1]["plan_hash"] == result.plan_hash
    assert audit[2]["content_hash"] == result.content_hash
    assert audit[2]["records"] == 1440 and audit[2]["outcome"] == "complete"
    (metric,) = events(caplog, "chartly.metrics")
    assert metric["requests_total"] == 7 and metric["requests_failed_total"] == 1  # the retried one
    assert metric["pages_processed_total"] == 6 and metric["retries_total"] == 1
    assert metric["bytes_ingested_total"] == result.bytes > 0
    assert metric["duration_seconds"] >= 0
    message = next(r for r in caplog.records if r.name == "chartly.metrics").getMessage()
    assert '"requests_total":7' in message  # JSON message for shippers


def test_audit_and_metrics_for_a_failed_run(live: Live,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chartly")
    live.sandbox.faults.add(Fault("status", endpoint="/v1/feed", status=401, on_request=3))
    with pytest.raises(Unauthenticated):
        live.fetch("sales-feed", DAY)
    audit = events(caplog, "chartly.audit")
    assert [e["event"] for e in audit][-1] == "connector.run.failed"
    assert audit[-1]["code"] == "unauthenticated" and audit[-1]["pages"] == 2
    (metric,) = events(caplog, "chartly.metrics")
    assert metric["requests_failed_total"] == 1 and metric["requests_total"] == 3


def test_a_crash_outside_the_taxonomy_still_audits_the_failure(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chartly")

    def on_page(progress: PageProgress) -> None:
        raise RuntimeError(f"store down (token {ALL_SECRETS[0]})")

    with pytest.raises(RuntimeError):
        live.fetch("sales-feed", DAY, on_page=on_page)
    audit = events(caplog, "chartly.audit")
    assert audit[-1]["event"] == "connector.run.failed"
    assert audit[-1]["code"] == "internal" and audit[-1]["message"] == "RuntimeError"
    assert leaks(log_text(caplog)) == []
