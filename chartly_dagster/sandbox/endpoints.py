"""The paginated endpoints: query parsing, index arithmetic and response bodies.

The first six each speak one pagination style that the shipped profiles are written against
(body cursor, next URL, offset, page number, time window, Link header). The others behave
like real APIs that lose data for a careless profile: a cursor under another name, Link
headers only with a page parameter, a server-side result cap, millisecond times with an
inclusive end, an error inside a 200. Bodies are built by joining pre-rendered record
strings, never by re-serialising dicts, to keep a page of 1,000 records cheap.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlencode

import orjson

from .data import Stream, parse_rfc3339, to_epoch_ms, to_epoch_seconds
from .faults import Fault

_INT_RE = re.compile(r"^-?[0-9]{1,18}$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class BadRequest(Exception):
    """A query that breaks the endpoint's contract; answered 400 invalid_argument."""


@dataclass
class PageRequest:
    """One parsed GET to a paginated endpoint, with the fault (if any) it drew."""

    path: str
    query: dict[str, str]
    host: str
    stream: Stream
    fault: Fault | None


@dataclass
class Reply:
    """A response before body/transport faults are applied to it."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


# -- query parameters -------------------------------------------------------------------

def _required(q: dict[str, str], name: str) -> str:
    value = q.get(name)
    if value is None or value == "":
        raise BadRequest(f"missing required parameter {name!r}")
    return value


def _int(q: dict[str, str], name: str, *, default: int | None = None, low: int | None = None,
         high: int | None = None) -> int:
    text = q.get(name)
    if text is None and default is not None:
        return default
    text = _required(q, name)
    if not _INT_RE.match(text):
        raise BadRequest(f"parameter {name!r} must be an integer, got {text[:40]!r}")
    value = int(text)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"parameter {name!r} must be in [{low}, {high}], got {value}")
    return value


def _rfc3339(q: dict[str, str], name: str) -> int:
    text = _required(q, name)
    try:
        return to_epoch_seconds(parse_rfc3339(text))
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be an RFC3339 timestamp with an offset "
                         f"(e.g. 2026-02-01T00:00:00Z), got {text[:40]!r}") from None


def _rfc3339_ms(q: dict[str, str], name: str, *, round_up: bool) -> int:
    """An RFC3339 bound (fractions allowed) as epoch milliseconds."""
    text = _required(q, name)
    try:
        moment = parse_rfc3339(text)
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be an RFC3339 timestamp with an offset "
                         f"(e.g. 2026-02-01T00:00:00.250Z), got {text[:40]!r}") from None
    ms = to_epoch_ms(moment)
    return ms + 1 if round_up and moment.microsecond % 1000 else ms


def _date_days(q: dict[str, str], name: str) -> int:
    text = _required(q, name)
    try:
        if not _DATE_RE.match(text):
            raise ValueError
        return date.fromisoformat(text).toordinal() - date(1970, 1, 1).toordinal()
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be a date YYYY-MM-DD, "
                         f"got {text[:40]!r}") from None


def _window(start: int, end: int, names: tuple[str, str]) -> tuple[int, int]:
    if end < start:
        raise BadRequest(f"{names[1]!r} must not be before {names[0]!r}")
    return start, end


# -- continuation tokens ----------------------------------------------------------------

def encode_token(path: str, position: int, end: int) -> str:
    """Opaque continuation: where the next page starts and where the window ends."""
    raw = f"{path}|{position}|{end}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_token(path: str, token: str, name: str) -> tuple[int, int]:
    try:
        if not _TOKEN_RE.match(token):
            raise ValueError
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        token_path, position, end = raw.split("|")
        if token_path != path:
            raise ValueError
        return int(position), int(end)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(f"parameter {name!r} is not a token this endpoint issued") from None


def _resume(req: PageRequest, token_name: str, window: Callable[[], tuple[int, int]]
            ) -> tuple[int, int, bool]:
    """(position, window end, first page?) from the token if sent, else from the window."""
    token = req.query.get(token_name)
    if token is None:
        lo, hi = window()
        return lo, hi, True
    position, end = _decode_token(req.path, token, token_name)
    return position, end, False


# -- pages ------------------------------------------------------------------------------

def _items(req: PageRequest, a: int, b: int, first_page: bool) -> bytes:
    """Records `a..b-1` joined, with a record-level fault (duplicate, skip) applied."""
    fragments = req.stream.render(a, b)
    kind = req.fault.kind if req.fault else None
    if kind == "duplicate" and fragments:
        # page k+1 starts with page k's last record; a first page repeats its own first one
        fragments.insert(0, fragments[0] if first_page else req.stream.render(a - 1, a)[0])
    elif kind == "skip" and fragments:
        del fragments[0]
    return b",".join(fragments)


def _stuck(req: PageRequest) -> bool:
    return req.fault is not None and req.fault.kind == "stuck_cursor"


def _next_url(req: PageRequest, params: dict[str, str | int]) -> str:
    return f"http://{req.host}{req.path}?{urlencode(params)}"


def _since_until(req: PageRequest) -> tuple[int, int]:
    q = req.query
    return req.stream.index_range(*_window(_rfc3339(q, "since"), _rfc3339(q, "until"),
                                           ("since", "until")))


def _cursor_page(req: PageRequest, limit: int, window: Callable[[], tuple[int, int]]
                 ) -> tuple[bytes, bytes]:
    """(records, JSON cursor or null) of a body-cursor page sent back in `cursor`."""
    position, end, first = _resume(req, "cursor", window)
    stop = min(position + limit, end) if position < end else position
    items = _items(req, position, stop, first)
    has_next = stop < end or _stuck(req)
    cursor = encode_token(req.path, position if _stuck(req) else stop, end)
    return items, orjson.dumps(cursor if has_next else None)


def events(req: PageRequest) -> Reply:
    """`/v1/events`: cursor in the body (`next_cursor`), window [since, until)."""
    limit = _int(req.query, "limit", default=100, low=1, high=10_000)
    items, cursor = _cursor_page(req, limit, lambda: _since_until(req))
    return Reply(200, b'{"data":{"items":[%s]},"next_cursor":%s}' % (items, cursor))


def events_v2(req: PageRequest) -> Reply:
    """`/v2/events`: like /v1/events, but the cursor field is `next` (no `next_cursor`)."""
    limit = _int(req.query, "limit", default=100, low=1, high=10_000)
    items, cursor = _cursor_page(req, limit, lambda: _since_until(req))
    return Reply(200, b'{"items":[%s],"next":%s}' % (items, cursor))


def readings(req: PageRequest) -> Reply:
    """`/v1/readings`: millisecond times, window [from, to] with an INCLUSIVE `to`."""
    q = req.query
    limit = _int(q, "limit", default=100, low=1, high=10_000)

    def window() -> tuple[int, int]:
        lo, hi = _window(_rfc3339_ms(q, "from", round_up=True),
                         _rfc3339_ms(q, "to", round_up=False), ("from", "to"))
        return req.stream.index_range_ticks(lo, hi + 1)

    items, cursor = _cursor_page(req, limit, window)
    return Reply(200, b'{"data":{"items":[%s]},"next_cursor":%s}' % (items, cursor))


#: the largest page /v1/exports serves; a larger `limit` is refused inside a 200
EXPORTS_MAX_LIMIT = 500


def exports(req: PageRequest) -> Reply:
    """`/v1/exports`: cursor pages whose body has an `error` field, set (on HTTP 200) when
    `limit` is above 500; records are rows (JSON arrays of the values) unless
    `format=objects`."""
    q = req.query
    limit = _int(q, "limit", default=100, low=1, high=10_000)
    if q.get("format", "rows") not in ("rows", "objects"):
        raise BadRequest("parameter 'format' must be 'rows' or 'objects'")
    if limit > EXPORTS_MAX_LIMIT:
        message = orjson.dumps(f"limit must be <= {EXPORTS_MAX_LIMIT}")
        return Reply(200, b'{"error":%s,"data":{"items":[]},"next_cursor":null}' % message)
    items, cursor = _cursor_page(req, limit, lambda: _since_until(req))
    if q.get("format", "rows") == "rows":
        items = orjson.dumps([list(r.values()) for r in orjson.loads(b"[%s]" % items)])[1:-1]
    return Reply(200, b'{"error":null,"data":{"items":[%s]},"next_cursor":%s}'
                 % (items, cursor))


def feed(req: PageRequest) -> Reply:
    """`/v1/feed`: absolute next URL in `links.next`, built from the request's Host."""
    q = req.query
    size = _int(q, "page_size", default=100, low=1, high=10_000)
    since, until = q.get("since"), q.get("until")
    position, end, first = _resume(req, "after", lambda: req.stream.index_range(
        *_window(_rfc3339(q, "since"), _rfc3339(q, "until"), ("since", "until"))))
    stop = min(position + size, end) if position < end else position
    items = _items(req, position, stop, first)
    next_url = None
    if stop < end or _stuck(req):
        params: dict[str, str | int] = {k: v for k, v in (("since", since), ("until", until))
                                        if v is not None}
        params["page_size"] = size
        params["after"] = encode_token(req.path, position if _stuck(req) else stop, end)
        next_url = _next_url(req, params)
    links = orjson.dumps({"next": next_url})
    return Reply(200, b'{"items":[%s],"links":%s}' % (items, links))


def orders(req: PageRequest) -> Reply:
    """`/v2/orders`: offset/limit over [from, to) epoch seconds, with the window's `total`."""
    q = req.query
    lo, hi = req.stream.index_range(*_window(_int(q, "from"), _int(q, "to"), ("from", "to")))
    offset = _int(q, "offset", default=0, low=0)
    limit = _int(q, "limit", default=100, low=1, high=1_000)
    a = min(lo + offset, hi)
    items = _items(req, a, min(a + limit, hi), offset == 0)
    return Reply(200, b'{"results":[%s],"total":%d}' % (items, hi - lo))


def invoices(req: PageRequest) -> Reply:
    """`/v1/invoices`: page/per_page, both dates inclusive, top-level array body."""
    q = req.query
    first_day, last_day = _window(_date_days(q, "start_date"), _date_days(q, "end_date"),
                                  ("start_date", "end_date"))
    lo, hi = req.stream.index_range(first_day * 86400, (last_day + 1) * 86400)
    page = _int(q, "page", default=1, low=1, high=10_000_000)
    per_page = _int(q, "per_page", default=100, low=1, high=500)
    a = min(lo + (page - 1) * per_page, hi)
    items = _items(req, a, min(a + per_page, hi), page == 1)
    return Reply(200, b"[%s]" % items)


def metrics(req: PageRequest) -> Reply:
    """`/v1/metrics`: one response per [start, end) epoch-ms window, capped at `limit`."""
    q = req.query
    start_ms, end_ms = _window(_int(q, "start"), _int(q, "end"), ("start", "end"))
    limit = _int(q, "limit", default=10_000, low=1, high=100_000)
    lo, hi = req.stream.index_range(-(-start_ms // 1000), -(-end_ms // 1000))
    headers = [("X-Truncated", "true")] if hi - lo > limit else []
    items = _items(req, lo, min(hi, lo + limit), True)
    return Reply(200, b'{"records":[%s]}' % items, headers)


def tickets(req: PageRequest) -> Reply:
    """`/v1/tickets`: top-level array, next page in an RFC 8288 `Link: <...>; rel="next"`;
    the last page links only its first page (`rel="first"`), the explicit end."""
    q = req.query
    size = _int(q, "per_page", default=100, low=1, high=1_000)
    after, before = q.get("updated_after"), q.get("updated_before")
    position, end, first = _resume(req, "page_token", lambda: req.stream.index_range(
        *_window(_rfc3339(q, "updated_after"), _rfc3339(q, "updated_before"),
                 ("updated_after", "updated_before"))))
    stop = min(position + size, end) if position < end else position
    items = _items(req, position, stop, first)
    params: dict[str, str | int] = {k: v for k, v in (("updated_after", after),
                                                       ("updated_before", before))
                                    if v is not None}
    params["per_page"] = size
    if stop < end or _stuck(req):
        params["page_token"] = encode_token(req.path, position if _stuck(req) else stop, end)
        link = f'<{_next_url(req, params)}>; rel="next"'
    else:
        link = f'<{_next_url(req, params)}>; rel="first"'
    return Reply(200, b"[%s]" % items, [("Link", link)])


def tickets_v2(req: PageRequest) -> Reply:
    """`/v2/tickets`: `page`/`per_page`, total only in `X-Total-Count`; Link headers only
    when `page` is sent (without it: the first `per_page` records and no Link at all)."""
    q = req.query
    size = _int(q, "per_page", default=100, low=1, high=1_000)
    lo, hi = req.stream.index_range(*_window(_rfc3339(q, "updated_after"),
                                             _rfc3339(q, "updated_before"),
                                             ("updated_after", "updated_before")))
    page = _int(q, "page", default=1, low=1, high=10_000_000)
    a = min(lo + (page - 1) * size, hi)
    items = _items(req, a, min(a + size, hi), page == 1)
    headers = [("X-Total-Count", str(hi - lo))]
    if "page" in q:
        last = max(1, -(-(hi - lo) // size))
        links = [("first", 1), *([("prev", page - 1)] if page > 1 else []),
                 *([("next", page + 1)] if page < last else []), ("last", last)]
        headers.append(("Link", ", ".join(
            f'<{_next_url(req, {**q, "page": number})}>; rel="{rel}"' for rel, number in links)))
    return Reply(200, b"[%s]" % items, headers)


#: the most records /v1/logs serves for one window, like a search API's result window
LOGS_MAX_RESULTS = 500


def logs(req: PageRequest) -> Reply:
    """`/v1/logs`: Link-header pages that stop after 500 records of a window, with no Link
    header at all on the last page, so a busy window ends on a full page."""
    q = req.query
    size = _int(q, "per_page", default=100, low=1, high=1_000)

    def window() -> tuple[int, int]:
        lo, hi = _since_until(req)
        return lo, min(hi, lo + LOGS_MAX_RESULTS)

    position, end, first = _resume(req, "page_token", window)
    stop = min(position + size, end) if position < end else position
    items = _items(req, position, stop, first)
    headers = []
    if stop < end:
        params: dict[str, str | int] = {k: v for k, v in q.items() if k != "page_token"}
        params["page_token"] = encode_token(req.path, stop, end)
        headers.append(("Link", f'<{_next_url(req, params)}>; rel="next"'))
    return Reply(200, b"[%s]" % items, headers)


ROUTES: dict[str, Callable[[PageRequest], Reply]] = {
    "/v1/events": events,
    "/v1/feed": feed,
    "/v2/orders": orders,
    "/v1/invoices": invoices,
    "/v1/metrics": metrics,
    "/v1/tickets": tickets,
    "/v2/events": events_v2,
    "/v2/tickets": tickets_v2,
    "/v1/logs": logs,
    "/v1/readings": readings,
    "/v1/exports": exports,
}
