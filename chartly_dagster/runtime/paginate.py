"""Paginators: from a plan's first request and each page, the next request, or the end.

Each pagination mode is one small class (its first state, how it advances, its checkpoint
type, how it ends), chosen from `MODES`. `Paginator` wraps the chosen mode with what every
mode shares: counting records, checking a declared total, and judging how the window ended.

Every window ends explicitly or not at all (no silent loss): an explicit end is one of
`EXPLICIT_ENDS`; any other stop on a full page is `possibly_truncated`, and a continuation
the profile names but the response lacks is a profile error, never an end. State is a plain
JSON payload (next request plus what a check needs), so a checkpoint resumes a window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urljoin

import orjson

from ..core.errors import (
    IncompleteWindow,
    InvalidArgument,
    PaginationViolation,
    PossiblyTruncated,
    ProfileMismatch,
)
from ..core.plan import Plan
from ..core.profile import ConnectorSpec

#: How a window may end explicitly (`WindowResult.ended_by`): the continuation was present
#: and empty, a Link header had no rel=next, a page was short or empty, the declared total
#: was reached, the mode makes one request, or the last time slice was fetched.
EXPLICIT_ENDS = frozenset({"empty_continuation", "no_next_link", "short_page", "total_reached",
                           "single_request", "last_slice"})
#: The other values of `ended_by`: a cap stopped the window (`cap:maxPages`, ...), or a
#: broken invariant did under `onViolation: finding`.
CAP_ENDS = frozenset({"cap:maxPages", "cap:maxRecords", "cap:maxBytes"})
STOPPED_ON_FINDING = "stopped_on_finding"
#: longest upstream text (error field) quoted in an error message
EXCERPT_CHARS = 200
_KEYS_LISTED = 20
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL_RE = re.compile(r"""rel\s*=\s*"?([^";]+)"?""", re.I)
_ABSENT = object()


@dataclass(frozen=True)
class PageRequest:
    """One request to send: a URL and its query params (the URL may carry its own query)."""

    url: str
    params: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "params": dict(sorted(self.params.items()))}


@dataclass(frozen=True)
class PageInfo:
    """What a paginator needs from a fetched page; `records` are before window filtering."""

    request: PageRequest
    body: Any
    headers: Mapping[str, str]
    final_url: str
    records: list[Any]


def lookup(body: Any, path: str) -> Any:
    """Value at a dot path in a JSON body, or `_ABSENT` when any part is missing."""
    value = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def field_value(body: Any, path: str) -> Any:
    """Value at a dot path in a JSON body, or None when it is missing or null."""
    value = lookup(body, path)
    return None if value is _ABSENT else value


def next_link(header: str | None) -> str | None:
    """The `rel="next"` target of an RFC 8288 Link header."""
    if not header:
        return None
    for match in _LINK_RE.finditer(header):
        for rel in _REL_RE.findall(match.group(2) or ""):
            if "next" in rel.lower().split():
                return match.group(1).strip()
    return None


def top_level_keys(body: Any) -> str:
    """The names (never the values) of a body's top-level keys, bounded, for an error."""
    if not isinstance(body, dict):
        return "none: the body is a JSON " + ("array" if isinstance(body, list) else "value")
    names = [str(k)[:40] for k in sorted(body, key=str)[:_KEYS_LISTED]]
    more = len(body) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "") if names else "none"


def excerpt(value: Any, scrub: Callable[[str], str]) -> str:
    """Upstream text fit for an error message: redacted, one line, bounded."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(scrub(text).split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def read_records(body: Any, spec: ConnectorSpec, scrub: Callable[[str], str]) -> list[Any]:
    """The records of a page; an error signalled inside a 200, or records that are not
    objects, fail the page with a message that says what to change."""
    error_field = spec.pagination.error_field
    if error_field:
        error = field_value(body, error_field)
        if error not in (None, False, "", [], {}):
            raise InvalidArgument(f"the upstream reported an error in an HTTP 200 response "
                                  f"(pagination.errorField {error_field!r}): "
                                  f"{excerpt(error, scrub)}", field="pagination.errorField")
    path = spec.records.path
    records = body if not path else field_value(body, path)
    if not isinstance(records, list):
        where = f"field {path!r}" if path else "the body"
        raise InvalidArgument(f"{where} of the response is not a JSON array of records",
                              field="records.path")
    if not set(map(type, records)) <= {dict}:  # C-speed: ~20 us for 1,000 records
        index, record = next((i, r) for i, r in enumerate(records) if type(r) is not dict)
        if isinstance(record, list):
            why = "an array, not an object: the API may need a parameter to return objects"
        else:
            why = f"a JSON {type(record).__name__}, not an object"
        raise ProfileMismatch(f"record {index} is {why}", field="records.path")
    return records


# -- the modes ------------------------------------------------------------------------------

class _Mode:
    """One pagination mode: first state, how a page advances it, its checkpoint type.

    `advance` returns the next request, or the name of how the window ended: one of
    `EXPLICIT_ENDS`, or "continuation_absent"/"no_link_header" for `Paginator` to judge.
    """

    checkpoint_type: ClassVar[str]

    def __init__(self, spec: ConnectorSpec, steps: list[PageRequest]) -> None:
        self.spec = spec
        #: this mode's own section of the profile (the class `MODES` maps its mode to)
        self.pg: Any = spec.pagination
        self.steps = steps
        self.page_size: int | None = None
        #: the profile key a declared total comes from, for messages
        self.total_source: str | None = None

    def initial_state(self) -> dict[str, Any]:
        return {}

    def advance(self, page: PageInfo, state: dict[str, Any]) -> PageRequest | str:
        raise NotImplementedError

    def declared_total(self, page: PageInfo) -> int | None:
        """The number of records the upstream says the window holds, when it says."""
        return None

    def absent_message(self, page: PageInfo) -> str:
        """Why a continuation the profile names is missing, and what to change."""
        raise NotImplementedError

    def repeat_param(self) -> tuple[str, str] | None:
        """(profile key, parameter) a repeated first page most likely points at."""
        return None

    def is_full(self, records: int) -> bool:
        """Whether a page this long may have more after it (unknown size: assume so)."""
        return self.page_size is None or records >= self.page_size

    def _check_new(self, state: dict[str, Any], token: str, what: str) -> None:
        seen: list[str] = state["seen"]
        if token in seen:
            raise PaginationViolation(f"the upstream returned a {what} it already returned "
                                      f"(page {len(seen) + 1}): pagination does not advance",
                                      field="pagination")
        seen.append(token)

    def _follow(self, page: PageInfo, state: dict[str, Any], target: Any) -> PageRequest:
        if not isinstance(target, str):
            raise InvalidArgument("next URL is not a string", field="pagination")
        url = urljoin(page.final_url, target)
        self._check_new(state, url, "next URL")
        return PageRequest(url, {})


class _TotalsMode(_Mode):
    """Modes whose profile may declare where the upstream states the window's total."""

    def __init__(self, spec: ConnectorSpec, steps: list[PageRequest]) -> None:
        super().__init__(spec, steps)
        self.page_size = self.pg.page_size
        self.total_field: str | None = self.pg.total_field
        self.total_header: str | None = self.pg.total_header
        if self.total_field:
            self.total_source = f"pagination.totalField {self.total_field!r}"
        elif self.total_header:
            self.total_source = f"pagination.totalHeader {self.total_header!r}"

    def declared_total(self, page: PageInfo) -> int | None:
        if self.total_field:
            value = lookup(page.body, self.total_field)
            if value is _ABSENT:
                raise ProfileMismatch(
                    f"pagination.totalField {self.total_field!r} is not in the response "
                    f"(top-level keys: {top_level_keys(page.body)})",
                    field="pagination.totalField")
            if value is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"total field {self.total_field!r} is not a "
                                      "non-negative integer", field=self.total_field)
            return value
        if self.total_header:
            text = page.headers.get(self.total_header)
            if text is None:
                raise ProfileMismatch(
                    f"pagination.totalHeader {self.total_header!r} is not in the response "
                    f"(headers: {', '.join(sorted(k.lower() for k in page.headers)) or 'none'})",
                    field="pagination.totalHeader")
            if not text.strip().isdigit():
                raise InvalidArgument(f"header {self.total_header!r} is not a non-negative "
                                      "integer", field="pagination.totalHeader")
            return int(text)
        return None


class CursorMode(_TotalsMode):
    """A cursor in a body field sent back in a parameter, or a next URL in a body field."""

    checkpoint_type = "cursor"

    def initial_state(self) -> dict[str, Any]:
        return {"seen": []}

    def advance(self, page: PageInfo, state: dict[str, Any]) -> PageRequest | str:
        pg = self.pg
        _, field = pg.continuation_field
        value = lookup(page.body, field)
        if value is _ABSENT:
            return "continuation_absent"
        if value in (None, ""):
            return "empty_continuation"
        if pg.request_param is None:
            return self._follow(page, state, value)
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise InvalidArgument(f"cursor field {field!r} is not a string", field=field)
        cursor = str(value)
        self._check_new(state, cursor, "cursor")
        base = self.steps[0]
        return PageRequest(base.url, {**base.params, pg.request_param: cursor})

    def absent_message(self, page: PageInfo) -> str:
        key, field = self.pg.continuation_field
        return (f"pagination.{key} {field!r} is not in the response (top-level keys: "
                f"{top_level_keys(page.body)}): an absent continuation is not an end; name "
                "the field the upstream sends (null or empty there ends the window)")


class LinkMode(_TotalsMode):
    """The `rel="next"` target of the response's Link header."""

    checkpoint_type = "cursor"

    def initial_state(self) -> dict[str, Any]:
        return {"seen": []}

    def advance(self, page: PageInfo, state: dict[str, Any]) -> PageRequest | str:
        header = page.headers.get("link")
        if header is None:
            return "no_link_header"
        target = next_link(header)
        if target in (None, ""):
            return "no_next_link"
        return self._follow(page, state, target)

    def absent_message(self, page: PageInfo) -> str:
        return (f"the upstream sent no Link header on a full first page ({len(page.records)} "
                "records): it may send Link only when a page parameter is present (add one "
                "to request.params), or it does not paginate with Link headers")


class _ArithmeticMode(_TotalsMode):
    """The client computes the next request: a position parameter advances by a step."""

    position_key: ClassVar[str]
    param_key: ClassVar[str]

    def __init__(self, spec: ConnectorSpec, steps: list[PageRequest]) -> None:
        super().__init__(spec, steps)
        self.param: str = getattr(self.pg, self.param_key)

    def records_before(self, position: int) -> int:
        raise NotImplementedError

    def following(self, position: int) -> int:
        raise NotImplementedError

    def repeat_param(self) -> tuple[str, str]:
        return f"pagination.{self.param_key.split('_')[0]}Param", self.param

    def advance(self, page: PageInfo, state: dict[str, Any]) -> PageRequest | str:
        size = int(self.page_size or 0)
        count = len(page.records)
        position = state[self.position_key]
        total = state.get("total")
        before = self.records_before(position)
        if total is not None and before >= total and count:
            raise PaginationViolation(f"{self.position_key} {position} is past the declared "
                                      f"total {total} but returned {count} records",
                                      field="pagination")
        if count > size:
            raise PaginationViolation(f"page returned {count} records, more than pageSize "
                                      f"{size}", field="pagination")
        if count < size:
            return "short_page"
        if total is not None and before + size >= total:
            return "total_reached"
        state[self.position_key] = following = self.following(position)
        base = self.steps[0]
        return PageRequest(base.url, {**base.params, self.param: str(following)})


class OffsetMode(_ArithmeticMode):
    checkpoint_type = "offset"
    position_key = "offset"
    param_key = "offset_param"

    def initial_state(self) -> dict[str, Any]:
        return {"offset": 0}

    def records_before(self, position: int) -> int:
        return position

    def following(self, position: int) -> int:
        return position + int(self.page_size or 0)


class PageMode(_ArithmeticMode):
    checkpoint_type = "page"
    position_key = "page"
    param_key = "page_param"

    def initial_state(self) -> dict[str, Any]:
        return {"page": self.pg.first_page}

    def records_before(self, position: int) -> int:
        return (position - self.pg.first_page) * int(self.page_size or 0)

    def following(self, position: int) -> int:
        return position + 1


class SlicesMode(_Mode):
    """One request per time slice; a full slice may have been cut by the upstream."""

    checkpoint_type = "watermark"

    def __init__(self, spec: ConnectorSpec, steps: list[PageRequest]) -> None:
        super().__init__(spec, steps)
        self.page_size = self.pg.page_size

    def initial_state(self) -> dict[str, Any]:
        return {"step": 0}

    def advance(self, page: PageInfo, state: dict[str, Any]) -> PageRequest | str:
        if self.page_size and len(page.records) >= self.page_size:
            raise PossiblyTruncated(f"slice {state['step']} returned a full page "
                                    f"({len(page.records)} records): it may be truncated; "
                                    "shorten sliceSeconds", field="pagination")
        state["step"] += 1
        if state["step"] < len(self.steps):
            return self.steps[state["step"]]
        return "last_slice"


class SingleMode(_Mode):
    """One request per window."""

    checkpoint_type = "watermark"

    def advance(self, page: PageInfo, state: dict[str, Any]) -> PageRequest | str:
        return "single_request"


#: The one place a pagination mode picks its runtime behaviour.
MODES: dict[str, type[_Mode]] = {
    "cursor": CursorMode, "link": LinkMode, "offset": OffsetMode, "page": PageMode,
    "time-window": SlicesMode, "none": SingleMode,
}


class Paginator:
    """Walks one window: `current` is the next request, `advance` moves past a page.

    Besides the mode's own state it keeps `fetched` (records served, before window
    filtering), the last declared `total`, and `ended_by` once the window is over.
    """

    def __init__(self, spec: ConnectorSpec, plan: Plan, drop_params: frozenset[str],
                 state: dict[str, Any] | None = None) -> None:
        steps = [PageRequest(s["url"], {k: v for k, v in s["params"].items()
                                        if k not in drop_params}) for s in plan.steps]
        self.spec = spec
        self._mode = MODES[spec.pagination.mode](spec, steps)
        self.checkpoint_type = self._mode.checkpoint_type
        fresh = {"next": steps[0].to_dict(), **self._mode.initial_state(), "fetched": 0,
                 "pages_seen": 0, "total": None, "first_id": None, "ended_by": None}
        self.state: dict[str, Any] = fresh if state is None else {**fresh, **state}

    @property
    def current(self) -> PageRequest | None:
        nxt = self.state.get("next")
        return None if nxt is None else PageRequest(nxt["url"], dict(nxt["params"]))

    @property
    def ended_by(self) -> str | None:
        """How the window ended (see `EXPLICIT_ENDS`, `CAP_ENDS`); None while it runs."""
        return self.state["ended_by"]

    def stop(self, ended_by: str) -> None:
        """End the window before the pages run out (a cap, or a finding)."""
        self.state["next"] = None
        self.state["ended_by"] = ended_by

    def advance(self, page: PageInfo) -> None:
        """Set the next request from `page`, or end the window.

        Raises PaginationViolation (or a subclass) on a broken invariant, ProfileMismatch
        when the profile names what the upstream does not send.
        """
        st = self.state
        st["pages_seen"] += 1
        st["fetched"] += len(page.records)
        total = self._mode.declared_total(page)
        if total is not None:
            st["total"] = total
        self._check_repeated_first_page(page)
        outcome = self._mode.advance(page, st)
        if isinstance(outcome, PageRequest):
            st["next"] = outcome.to_dict()
            return
        st["next"] = None
        st["ended_by"] = self._judge_end(outcome, page)

    def _judge_end(self, reason: str, page: PageInfo) -> str:
        st = self.state
        total, fetched = st["total"], st["fetched"]
        if reason not in EXPLICIT_ENDS:
            full = self._mode.is_full(len(page.records))
            if total is not None and fetched == total:
                reason = "total_reached"
            elif reason == "continuation_absent" or (full and st["pages_seen"] == 1):
                raise ProfileMismatch(self._mode.absent_message(page), field="pagination")
            elif full:
                raise PossiblyTruncated(
                    f"the window stopped after a full page ({len(page.records)} records) "
                    f"without an explicit end ({reason.replace('_', ' ')}): records may be "
                    "missing", field="pagination")
            else:
                reason = "short_page"
        if total is not None and fetched != total:
            raise IncompleteWindow(f"the upstream declared {total} records "
                                   f"({self._mode.total_source}) but "
                                   f"{fetched} were fetched: expected {total}, got {fetched}",
                                   field="pagination")
        return reason

    def _check_repeated_first_page(self, page: PageInfo) -> None:
        """A later page that starts like the first one: the position parameter is ignored."""
        param = self._mode.repeat_param()
        if param is None or not page.records:
            return
        first = orjson.dumps(lookup(page.records[0], self.spec.records.id_field),
                             default=str).decode()
        st = self.state
        if st["pages_seen"] == 1:
            st["first_id"] = first
        elif first == st["first_id"]:
            key, name = param
            raise ProfileMismatch(
                f"page {st['pages_seen']} repeats the first page's records: the upstream "
                f"most likely ignores {key} {name!r} (check the parameter name it expects)",
                field=key)
