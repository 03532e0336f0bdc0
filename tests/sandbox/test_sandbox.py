"""The sandbox upstream over real HTTP: pagination contracts, auth, faults, determinism.

Every walk is compared with `Sandbox.ground_truth`, which is what the runtime's tests
rely on when they compare written records with the upstream.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from chartly_dagster.sandbox import ENDPOINTS, Fault, Sandbox, SandboxConfig, run_sandbox
from chartly_dagster.sandbox.cli import serve_main
from chartly_dagster.sandbox.data import ORIGIN_EPOCH_S, Stream, format_rfc3339
from chartly_dagster.sandbox.server import start_sandbox

DAY = 86400
T0 = ORIGIN_EPOCH_S + 31 * DAY  # 2026-02-01T00:00:00Z
WINDOW = (T0 + 30, T0 + 3 * 3600 + 17 * 60 + 13)  # ~197 records at 60/h: splits mid-page
PAGINATED = sorted(ENDPOINTS)
Walk = Callable[[httpx.Client, Sandbox, int, int, int], list[dict[str, Any]]]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as c:  # no env proxy between us and it
        yield c


def _json(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    return orjson.loads(response.content)


def _day(epoch_s: int) -> str:
    return format_rfc3339(epoch_s)[:10]


def walk_events(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    params: dict[str, Any] = {"since": format_rfc3339(start), "until": format_rfc3339(end),
                              "limit": size}
    out: list[dict] = []
    while True:
        body = _json(c.get(sb.url("/v1/events"), params=params))
        out += body["data"]["items"]
        if body["next_cursor"] is None:
            return out
        params["cursor"] = body["next_cursor"]


def walk_feed(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    url: str | None = sb.url("/v1/feed", since=format_rfc3339(start),
                             until=format_rfc3339(end), page_size=size)
    out: list[dict] = []
    while url is not None:
        assert url.startswith(sb.base_url + "/v1/feed?")
        body = _json(c.get(url))
        out += body["items"]
        url = body["links"]["next"]
    return out


def walk_orders(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    out: list[dict] = []
    while True:
        body = _json(c.get(sb.url("/v2/orders", **{"from": start, "to": end},
                                  offset=len(out), limit=size)))
        out += body["results"]
        if len(out) >= body["total"] or not body["results"]:
            assert len(out) == body["total"]
            return out


def walk_invoices(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    assert start % DAY == 0 and end % DAY == 0, "invoices take whole days"
    out: list[dict] = []
    page = 1
    while True:
        body = _json(c.get(sb.url("/v1/invoices", start_date=_day(start),
                                  end_date=_day(end - DAY), page=page, per_page=size)))
        if not body:
            return out
        out += body
        page += 1


def walk_metrics(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    response = c.get(sb.url("/v1/metrics", start=start * 1000, end=end * 1000))
    assert "x-truncated" not in response.headers
    return _json(response)["records"]


def walk_tickets(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    url: str | None = sb.url("/v1/tickets", updated_after=format_rfc3339(start),
                             updated_before=format_rfc3339(end), per_page=size)
    out: list[dict] = []
    while url is not None:
        response = c.get(url)
        out += _json(response)
        url = response.links.get("next", {}).get("url")
    return out


def _walk_cursor(path: str, items: Callable[[Any], list[dict]], cursor_field: str,
                 window: Callable[[int, int], dict[str, str]]) -> Walk:
    def walk(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
        params: dict[str, Any] = {**window(start, end), "limit": size}
        out: list[dict] = []
        while True:
            body = _json(c.get(sb.url(path), params=params))
            out += items(body)
            if body[cursor_field] is None:
                return out
            params["cursor"] = body[cursor_field]

    return walk


def _since_until(start: int, end: int) -> dict[str, str]:
    return {"since": format_rfc3339(start), "until": format_rfc3339(end)}


def _inclusive_ms(start: int, end: int) -> dict[str, str]:
    """/v1/readings takes an inclusive end: the last millisecond of the window."""
    return {"from": format_rfc3339(start), "to": format_rfc3339(end - 1)[:-1] + ".999Z"}


def walk_tickets_v2(c: httpx.Client, sb: Sandbox, start: int, end: int,
                    size: int) -> list[dict]:
    url: str | None = sb.url("/v2/tickets", updated_after=format_rfc3339(start),
                             updated_before=format_rfc3339(end), per_page=size, page=1)
    out: list[dict] = []
    while url is not None:
        response = c.get(url)
        out += _json(response)
        url = response.links.get("next", {}).get("url")
        assert int(response.headers["x-total-count"]) >= len(out)
    return out


def walk_logs(c: httpx.Client, sb: Sandbox, start: int, end: int, size: int) -> list[dict]:
    url: str | None = sb.url("/v1/logs", since=format_rfc3339(start),
                             until=format_rfc3339(end), per_page=size)
    out: list[dict] = []
    while url is not None:
        response = c.get(url)
        out += _json(response)
        url = response.links.get("next", {}).get("url")
        assert "link" in response.headers or url is None
    return out


WALKS: dict[str, Walk] = {
    "/v1/events": walk_events, "/v1/feed": walk_feed, "/v2/orders": walk_orders,
    "/v1/invoices": walk_invoices, "/v1/metrics": walk_metrics, "/v1/tickets": walk_tickets,
    "/v2/events": _walk_cursor("/v2/events", lambda b: b["items"], "next", _since_until),
    "/v2/tickets": walk_tickets_v2, "/v1/logs": walk_logs,
    "/v1/readings": _walk_cursor("/v1/readings", lambda b: b["data"]["items"], "next_cursor",
                                 _inclusive_ms),
    "/v1/exports": _walk_cursor("/v1/exports", lambda b: b["data"]["items"], "next_cursor",
                                lambda s, e: {**_since_until(s, e), "format": "objects"}),
}


def _window_for(path: str) -> tuple[int, int]:
    return (T0, T0 + 2 * DAY) if path == "/v1/invoices" else WINDOW


def _empty_window(stream: Stream) -> tuple[int, int]:
    """A window strictly between two consecutive events: it holds no record."""
    i = stream.first_index_at_or_after(T0)
    while stream.time_of(i + 1) - stream.time_of(i) < 2:
        i += 1
    return stream.time_of(i) + 1, stream.time_of(i + 1)


# -- data ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGINATED)
def test_walk_returns_exactly_the_ground_truth(path: str, sandbox_session: Sandbox,
                                               client: httpx.Client) -> None:
    start, end = _window_for(path)
    records = WALKS[path](client, sandbox_session, start, end, 7 if path != "/v1/invoices"
                          else 130)
    truth = sandbox_session.ground_truth(path, start, end)
    assert records == truth
    assert len(truth) > 130
    shape = ENDPOINTS[path]
    ids = [r[shape.id_key] for r in records]
    assert len(set(ids)) == len(ids) and all(i.startswith(shape.id_prefix) for i in ids)
    times = [r[shape.time_key] for r in records]
    assert times == sorted(times)
    if shape.time_style == "rfc3339":
        assert format_rfc3339(start) <= times[0] and times[-1] < format_rfc3339(end)
    elif shape.time_style == "rfc3339_ms":
        moments = [datetime.fromisoformat(t) for t in times]
        bounds = [datetime.fromtimestamp(t, UTC) for t in (start, end)]
        assert bounds[0] <= moments[0] and moments[-1] < bounds[1]
        assert any(m.microsecond for m in moments)  # times between whole seconds
    elif shape.time_style == "epoch_s":
        assert start <= times[0] and times[-1] < end
    else:
        assert start * 1000 <= times[0] and times[-1] < end * 1000


@pytest.mark.parametrize("path", sorted(set(PAGINATED) - {"/v1/invoices"}))
def test_adjacent_windows_partition_the_stream(path: str, sandbox_session: Sandbox,
                                               client: httpx.Client) -> None:
    start, end = WINDOW
    middle = start + 4321
    walk = WALKS[path]
    left = walk(client, sandbox_session, start, middle, 10)
    right = walk(client, sandbox_session, middle, end, 10)
    assert left and right
    assert left + right == walk(client, sandbox_session, start, end, 500)


@pytest.mark.parametrize("path", sorted(set(PAGINATED) - {"/v1/invoices"}))
def test_zero_record_windows(path: str, sandbox_session: Sandbox,
                             client: httpx.Client) -> None:
    start, end = _empty_window(sandbox_session.config.stream(path))
    walk = WALKS[path]
    assert walk(client, sandbox_session, start, end, 5) == []
    if path != "/v1/readings":  # an inclusive end cannot name an empty window
        assert walk(client, sandbox_session, start, start, 5) == []
    assert sandbox_session.ground_truth(path, start, end) == []


def test_invoice_dates_are_inclusive_and_pages_past_the_end_are_empty(
        sandbox_session: Sandbox, client: httpx.Client) -> None:
    one_day = _json(client.get(sandbox_session.url(
        "/v1/invoices", start_date="2026-02-01", end_date="2026-02-01", per_page=500)))
    assert len(one_day) == 500
    truth = sandbox_session.ground_truth("/v1/invoices", T0, T0 + DAY)
    assert len(truth) == 24 * 60 and one_day == truth[:500]
    assert _json(client.get(sandbox_session.url(
        "/v1/invoices", start_date="2026-02-01", end_date="2026-02-01", page=99))) == []


def test_metrics_truncates_at_limit_with_a_header(sandbox_session: Sandbox,
                                                  client: httpx.Client) -> None:
    start, end = WINDOW
    response = client.get(sandbox_session.url("/v1/metrics", start=start * 1000,
                                              end=end * 1000, limit=50))
    assert response.headers["x-truncated"] == "true"
    assert _json(response)["records"] == sandbox_session.ground_truth(
        "/v1/metrics", start, end)[:50]


def test_orders_total_counts_the_window(sandbox_session: Sandbox,
                                        client: httpx.Client) -> None:
    start, end = WINDOW
    body = _json(client.get(sandbox_session.url("/v2/orders", **{"from": start, "to": end},
                                                offset=10_000, limit=5)))
    assert body == {"results": [], "total": len(sandbox_session.ground_truth(
        "/v2/orders", start, end))}


def test_records_carry_money_currency_customer_and_unicode(sandbox_session: Sandbox) -> None:
    records = sandbox_session.ground_truth("/v1/events", T0, T0 + DAY)
    assert {"id", "occurred_at", "amount", "currency", "customer", "text"} == set(records[0])
    assert all(round(r["amount"], 2) == r["amount"] > 0 for r in records)
    assert all(set(r["customer"]) == {"id", "name"} for r in records)
    texts = {r["text"] for r in records}
    assert "Zoë – café ☕" in texts and any("\n" in t for t in texts)  # noqa: RUF001


def test_windows_before_the_origin_and_at_high_rates(client: httpx.Client) -> None:
    config = SandboxConfig(rates={"/v1/events": 3600 * 50})
    with run_sandbox(config) as sb:
        start = ORIGIN_EPOCH_S - 3
        records = walk_events(client, sb, start, start + 6, 100)
        assert len(records) == 300 == len({r["id"] for r in records})
        assert records == sb.ground_truth("/v1/events", start, start + 6)
        assert records[0]["occurred_at"] == "2025-12-31T23:59:57Z"


def test_same_seed_same_bytes_other_seed_other_data(client: httpx.Client) -> None:
    def page(seed: int) -> bytes:
        with run_sandbox(SandboxConfig(seed=seed)) as sb:
            return client.get(sb.url("/v1/events", since=format_rfc3339(WINDOW[0]),
                                     until=format_rfc3339(WINDOW[1]), limit=50)).content
    assert page(7) == page(7)
    assert page(7) != page(8)


def test_ground_truth_accepts_datetimes_and_rfc3339(sandbox_session: Sandbox) -> None:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    by_datetime = sandbox_session.ground_truth("/v1/tickets", start, start + timedelta(hours=1))
    assert by_datetime == sandbox_session.ground_truth(
        "/v1/tickets", "2026-02-01T00:00:00Z", "2026-02-01T01:00:00+00:00")
    assert len(by_datetime) == 60


# -- contract errors -------------------------------------------------------------------

@pytest.mark.parametrize(("path", "params"), [
    ("/v1/events", {"until": "2026-02-01T00:00:00Z"}),
    ("/v1/events", {"since": "2026-02-01", "until": "2026-02-02T00:00:00Z"}),
    ("/v1/events", {"since": "2026-02-01T00:00:00", "until": "2026-02-02T00:00:00Z"}),
    ("/v1/events", {"since": "2026-02-02T00:00:00Z", "until": "2026-02-01T00:00:00Z"}),
    ("/v1/events", {"since": "2026-02-01T00:00:00Z", "until": "2026-02-02T00:00:00Z",
                    "limit": "10001"}),
    ("/v1/events", {"cursor": "not-a-cursor"}),
    ("/v1/feed", {"since": "2026-02-01T00:00:00Z", "until": "x"}),
    ("/v2/orders", {"from": "1769904000", "to": "soon"}),
    ("/v2/orders", {"from": "1769904000", "to": "1769907600", "limit": "1001"}),
    ("/v1/invoices", {"start_date": "2026-2-1", "end_date": "2026-02-01"}),
    ("/v1/invoices", {"start_date": "2026-02-01", "end_date": "2026-02-30"}),
    ("/v1/invoices", {"start_date": "2026-02-01", "end_date": "2026-02-01", "per_page": "501"}),
    ("/v1/metrics", {"start": "1769904000000"}),
    ("/v1/tickets", {"updated_after": "2026-02-01T00:00:00Z", "updated_before": ""}),
    ("/v1/tickets", {"page_token": "L3YxL2V2ZW50c3wxfDI"}),  # a /v1/events token
])
def test_out_of_contract_queries_are_400_invalid_argument(
        path: str, params: dict[str, str], sandbox_session: Sandbox,
        client: httpx.Client) -> None:
    response = client.get(sandbox_session.url(path), params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"


def test_unknown_paths_and_methods(sandbox_session: Sandbox, client: httpx.Client) -> None:
    assert client.get(sandbox_session.url("/v1/nope")).status_code == 404
    response = client.post(sandbox_session.url("/v1/events"))
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert client.head(sandbox_session.url("/v1/events")).status_code == 405
    assert _json(client.get(sandbox_session.url("/health"))) == {"ok": True}


# -- auth ------------------------------------------------------------------------------

AUTH_CASES = [
    (("bearer", "tok-1"), {"headers": {"Authorization": "Bearer tok-1"}},
     {"headers": {"Authorization": "Bearer tok-2"}}),
    (("api_key_header", "X-Api-Key", "key-1"), {"headers": {"X-Api-Key": "key-1"}},
     {"headers": {"X-Api-Key": "key-2"}}),
    (("api_key_query", "api_key", "key-1"), {"params": {"api_key": "key-1"}},
     {"params": {"api_key": "key-2"}}),
    (("basic", "ann", "pw-1"), {"auth": ("ann", "pw-1")}, {"auth": ("ann", "pw-2")}),
]


@pytest.mark.parametrize(("auth", "good", "bad"), AUTH_CASES, ids=lambda v: str(v)[:20])
def test_auth_modes(auth: Any, good: dict[str, Any], bad: dict[str, Any],
                    client: httpx.Client) -> None:
    with run_sandbox(SandboxConfig(auth=auth)) as sb:
        assert client.get(sb.url("/v1/me"), **good).json() == {"ok": True}
        for kwargs in ({}, bad):
            response = client.get(sb.url("/v1/me"), **kwargs)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"
        assert client.get(sb.url("/health")).status_code == 200
        window = {"from": T0, "to": T0 + 60}
        orders = {**good, "params": {**good.get("params", {}), **window}}
        assert client.get(sb.url("/v2/orders"), **orders).status_code == 200
        logged = json.dumps(sb.request_log)
        assert auth[-1] not in logged


def test_api_key_in_query_is_redacted_in_the_request_log(client: httpx.Client) -> None:
    with run_sandbox(SandboxConfig(auth=("api_key_query", "api_key", "s3cret"))) as sb:
        client.get(sb.url("/v1/me", api_key="s3cret"))
        assert sb.request_log == [("GET", "/v1/me", {"api_key": "[redacted]"})]


def test_forbidden_paths_and_per_endpoint_auth(client: httpx.Client) -> None:
    config = SandboxConfig(auth=("bearer", "tok"), forbidden={"/v1/tickets"},
                           endpoint_auth={"/v1/metrics": None,
                                          "/v2/orders": ("api_key_header", "X-Api-Key", "k")})
    with run_sandbox(config) as sb:
        bearer = {"Authorization": "Bearer tok"}
        response = client.get(sb.url("/v1/tickets"), headers=bearer)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
        assert client.get(sb.url("/v1/metrics", start=0, end=1000)).status_code == 200
        orders = sb.url("/v2/orders", **{"from": T0, "to": T0 + 60})
        assert client.get(orders, headers=bearer).status_code == 401
        assert client.get(orders, headers={"X-Api-Key": "k"}).status_code == 200


def test_invalid_auth_config_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as excinfo:
        SandboxConfig(auth=("bearer",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SandboxConfig(auth=("token", "abc"))  # type: ignore[arg-type]
    assert "abc" not in str(excinfo.value)


# -- faults ----------------------------------------------------------------------------

def _events_url(sb: Sandbox, **extra: Any) -> str:
    return sb.url("/v1/events", since=format_rfc3339(WINDOW[0]),
                  until=format_rfc3339(WINDOW[1]), limit=20, **extra)


def test_status_fault_fires_once_then_clears(sandbox: Sandbox, client: httpx.Client) -> None:
    fault = sandbox.faults.add(Fault("status", endpoint="/v1/events", status=503))
    first = client.get(_events_url(sandbox))
    assert first.status_code == 503 and first.json()["error"]["code"] == "unavailable"
    assert client.get(_events_url(sandbox)).status_code == 200
    assert fault.fired == 1 and sandbox.faults.pending() == []


@pytest.mark.parametrize("status", [500, 502, 503, 401, 403])
def test_status_faults(status: int, sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.add(Fault("status", endpoint="/v1/feed", status=status, times=2))
    url = sandbox.url("/v1/feed", since="2026-02-01T00:00:00Z", until="2026-02-01T01:00:00Z")
    assert [client.get(url).status_code for _ in range(3)] == [status, status, 200]


def test_429_with_retry_after_seconds_and_http_date(sandbox: Sandbox,
                                                    client: httpx.Client) -> None:
    sandbox.faults.add(Fault("status", endpoint="/v1/events", status=429, retry_after_s=7))
    sandbox.faults.add(Fault("status", endpoint="/v1/events", status=429, retry_after_s=30,
                             retry_after_format="http-date"))
    first = client.get(_events_url(sandbox))
    assert first.status_code == 429 and first.headers["retry-after"] == "7"
    assert first.json()["error"]["code"] == "rate_limited"
    second = client.get(_events_url(sandbox))
    assert second.status_code == 429
    when = parsedate_to_datetime(second.headers["retry-after"])
    assert timedelta(seconds=25) < when - datetime.now(UTC) <= timedelta(seconds=31)
    assert client.get(_events_url(sandbox)).status_code == 200


def test_fault_matching_by_ordinal_every_and_endpoint(sandbox: Sandbox,
                                                      client: httpx.Client) -> None:
    sandbox.faults.add(Fault("status", endpoint="/v1/events", on_request=2, every=3,
                             times=None, status=500))
    sandbox.faults.add(Fault("status", status=502))  # any endpoint but /health, once
    assert client.get(sandbox.url("/health")).status_code == 200
    assert client.get(sandbox.url("/v1/metrics", start=0, end=1)).status_code == 502
    codes = [client.get(_events_url(sandbox)).status_code for _ in range(8)]
    assert codes == [200, 500, 200, 200, 500, 200, 200, 500]
    assert sandbox.request_count("/v1/events") == 8
    sandbox.clear_requests()  # ordinals restart: the 2nd request fails again
    assert [client.get(_events_url(sandbox)).status_code for _ in range(2)] == [200, 500]
    sandbox.faults.clear()
    assert len(sandbox.faults) == 0


def test_fault_matching_by_query_names_a_page_not_an_arrival_order(
        sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.add(Fault("status", endpoint="/v2/orders", status=401,
                             query={"from": "86400", "offset": "1000"}))
    urls = [sandbox.url("/v2/orders", **{"from": start, "to": start + 86_400,
                                         "offset": offset, "limit": 1000})
            for start in (0, 86_400) for offset in (1000, 0)]
    # the other window's same page, and the page's own window at another offset, pass
    assert [client.get(url).status_code for url in urls] == [200, 200, 401, 200]
    assert len(sandbox.faults) == 0  # fired once, then cleared


def test_redirect_fault(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.add(Fault("redirect", location="http://169.254.169.254/latest/meta-data/"))
    response = client.get(_events_url(sandbox))
    assert response.status_code == 302
    assert response.headers["location"] == "http://169.254.169.254/latest/meta-data/"
    sandbox.faults.add(Fault("redirect", status=307, location="/health"))
    followed = client.get(_events_url(sandbox), follow_redirects=True)
    assert followed.json() == {"ok": True} and followed.history[0].status_code == 307


def test_slow_fault_before_headers_and_mid_body(sandbox: Sandbox) -> None:
    with httpx.Client(trust_env=False, timeout=0.2) as impatient:
        for phase in ("headers", "body"):
            sandbox.faults.add(Fault("slow", delay_ms=600, phase=phase))  # type: ignore[arg-type]
            with pytest.raises(httpx.ReadTimeout):
                impatient.get(_events_url(sandbox))
        assert impatient.get(_events_url(sandbox)).status_code == 200


def test_reset_fault_sends_part_of_the_body_then_rst(sandbox: Sandbox,
                                                     client: httpx.Client) -> None:
    sandbox.faults.add(Fault("reset", endpoint="/v1/events"))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(_events_url(sandbox))
    sandbox.faults.add(Fault("reset", endpoint="/v1/events", cut_fraction=0.3))
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as raw:
        target = _events_url(sandbox).removeprefix(sandbox.base_url)
        raw.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        with pytest.raises(ConnectionResetError):
            while chunk := raw.recv(65536):
                received += chunk
            pytest.fail("connection closed with FIN, not reset")
    assert client.get(_events_url(sandbox)).status_code == 200


def test_truncated_and_malformed_bodies(sandbox: Sandbox, client: httpx.Client) -> None:
    full = client.get(_events_url(sandbox)).content
    sandbox.faults.add(Fault("truncated", cut_fraction=0.25))
    truncated = client.get(_events_url(sandbox))
    assert truncated.status_code == 200 and truncated.content == full[:len(full) // 4]
    assert int(truncated.headers["content-length"]) == len(truncated.content)
    sandbox.faults.add(Fault("malformed"))
    malformed = client.get(_events_url(sandbox))
    assert malformed.status_code == 200
    for body in (truncated.content, malformed.content):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)


@pytest.mark.parametrize("path", ["/v1/events", "/v1/invoices"])
def test_oversized_page_is_valid_json_with_padding(path: str, sandbox: Sandbox,
                                                   client: httpx.Client) -> None:
    sandbox.faults.add(Fault("oversized", pad_bytes=3_000_000))
    url = (_events_url(sandbox) if path == "/v1/events" else
           sandbox.url(path, start_date="2026-02-01", end_date="2026-02-01"))
    body = _json(client.get(url))
    padded = body if isinstance(body, dict) else body[0]
    assert len(padded["padding"]) == 3_000_000


def test_duplicate_and_skip_faults_on_the_second_page(sandbox: Sandbox,
                                                      client: httpx.Client) -> None:
    truth = sandbox.ground_truth("/v1/events", *WINDOW)
    sandbox.faults.add(Fault("duplicate", endpoint="/v1/events", on_request=2))
    duplicated = walk_events(client, sandbox, *WINDOW, 20)
    assert duplicated[20] == duplicated[19] == truth[19]
    assert duplicated[:20] + duplicated[21:] == truth
    sandbox.clear_requests()
    sandbox.faults.add(Fault("skip", endpoint="/v1/events", on_request=2))
    skipped = walk_events(client, sandbox, *WINDOW, 20)
    assert skipped == truth[:20] + truth[21:]


@pytest.mark.parametrize("path", ["/v2/orders", "/v1/invoices"])
def test_duplicate_fault_on_computed_pagination(path: str, sandbox: Sandbox,
                                                client: httpx.Client) -> None:
    sandbox.faults.add(Fault("duplicate", endpoint=path, on_request=2))
    start, end = _window_for(path)
    records = WALKS[path](client, sandbox, start, end, 50) if path != "/v2/orders" else [
        r for offset in (0, 50) for r in _json(client.get(sandbox.url(
            path, **{"from": start, "to": end}, offset=offset, limit=50)))["results"]]
    assert records[50] == records[49]


def test_stuck_cursor_repeats_the_continuation(sandbox: Sandbox, client: httpx.Client) -> None:
    for path in ("/v1/events", "/v1/feed", "/v1/tickets"):
        sandbox.faults.add(Fault("stuck_cursor", endpoint=path, on_request=2))
    first = _json(client.get(_events_url(sandbox)))
    second = _json(client.get(_events_url(sandbox, cursor=first["next_cursor"])))
    assert second["next_cursor"] == first["next_cursor"]
    assert second["data"]["items"] == _json(client.get(
        _events_url(sandbox, cursor=first["next_cursor"])))["data"]["items"]

    feed_first = _json(client.get(sandbox.url("/v1/feed", since=format_rfc3339(WINDOW[0]),
                                              until=format_rfc3339(WINDOW[1]))))
    next_url = feed_first["links"]["next"]
    assert _json(client.get(next_url))["links"]["next"] == next_url

    tickets = sandbox.url("/v1/tickets", updated_after=format_rfc3339(WINDOW[0]),
                          updated_before=format_rfc3339(WINDOW[1]), per_page=10)
    link = client.get(tickets).links["next"]["url"]
    assert client.get(link).links["next"]["url"] == link


# -- server behaviour ------------------------------------------------------------------

def test_keep_alive_and_absolute_next_urls_follow_the_host_header(sandbox: Sandbox) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    try:
        sockets = []
        for _ in range(3):
            conn.request("GET", "/v1/feed?since=2026-02-01T00:00:00Z"
                                "&until=2026-02-01T02:00:00Z", headers={"Host": "localhost:1"})
            response = conn.getresponse()
            body = orjson.loads(response.read())
            sockets.append(conn.sock)
        assert body["links"]["next"].startswith("http://localhost:1/v1/feed?")
        assert sockets[0] is sockets[1] is sockets[2] is not None
    finally:
        conn.close()


def test_concurrent_requests_are_all_logged(sandbox: Sandbox) -> None:
    def hit() -> None:
        with httpx.Client(trust_env=False) as own:
            for _ in range(10):
                own.get(sandbox.url("/v1/metrics", start=0, end=1000))

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sandbox.request_count("/v1/metrics") == 40 == len(sandbox.request_log)
    times = sandbox.request_times("/v1/metrics")
    assert len(times) == 40 and times == sorted(times)


def test_binds_loopback_only_unless_allowed() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_sandbox(host="0.0.0.0")
    with run_sandbox() as sb:
        assert sb.host == "127.0.0.1" and sb.base_url == f"http://127.0.0.1:{sb.port}"


def test_binds_ipv6_loopback(client: httpx.Client) -> None:
    with run_sandbox(host="::1") as sb:
        assert sb.base_url == f"http://[::1]:{sb.port}"
        assert client.get(sb.url("/health")).json() == {"ok": True}


def test_fault_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="not a sandbox path"):
        Fault("status", endpoint="/v1/event")
    with pytest.raises(ValueError, match="3xx"):
        Fault("redirect", status=200)
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        Fault("skip", on_request=0)


def test_closed_sandbox_refuses_connections(client: httpx.Client) -> None:
    with run_sandbox() as sb:
        assert client.get(sb.url("/health")).status_code == 200
    with pytest.raises(httpx.TransportError):
        client.get(sb.url("/health"))


def test_serve_main_usage_errors(tmp_path: Path) -> None:
    assert serve_main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert serve_main(["--auth-file", str(tmp_path / "missing.json"), "--port", "0"]) == 2
    bad = tmp_path / "auth.json"
    bad.write_text('{"*": ["bearer"]}')
    assert serve_main(["--auth-file", str(bad), "--port", "0"]) == 2


def test_serve_cli_runs_a_server_with_an_auth_file(tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"*": ["bearer", "tok"], "/v1/metrics": None}))
    process = subprocess.Popen(
        [sys.executable, "-m", "chartly_dagster.sandbox", "--port", "0", "--seed", "3",
         "--auth-file", str(auth_file)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        base = line.split()[3]
        with httpx.Client(trust_env=False, timeout=5) as c:
            assert c.get(f"{base}/v1/me").status_code == 401
            assert c.get(f"{base}/v1/me", headers={"Authorization": "Bearer tok"}).json() == {
                "ok": True}
            assert c.get(f"{base}/v1/metrics?start=0&end=1").status_code == 200
        assert "tok" not in line
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_sandbox_imports_neither_runtime_nor_dagster() -> None:
    code = ("import sys, chartly_dagster.sandbox; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'httpx', 'pydantic')"
            " or m.startswith('chartly_dagster.runtime') or m.startswith('chartly_dagster.core')];"
            " print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
