"""Paginators: from a plan's first request and each page, the next request, or the end.

Every paginator's state is a plain JSON payload (the next request plus what it needs to
catch a broken invariant), so a checkpoint can resume a window after its last page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from ..core.errors import InvalidArgument, PaginationViolation
from ..core.plan import Plan
from ..core.profile import ConnectorSpec

CHECKPOINT_TYPES = {"cursor": "cursor", "link": "cursor", "offset": "offset", "page": "page",
                    "time-window": "watermark", "none": "watermark"}
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL_RE = re.compile(r"""rel\s*=\s*"?([^";]+)"?""", re.I)


@dataclass(frozen=True)
class PageRequest:
    """One request to send: a URL and its query params (the URL may carry its own query)."""

    url: str
    params: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "params": dict(sorted(self.params.items()))}


@dataclass(frozen=True)
class PageInfo:
    """What a paginator needs from a fetched page."""

    request: PageRequest
    body: Any
    link_header: str | None
    final_url: str
    records: int


def field_value(body: Any, path: str) -> Any:
    """Value at a dot path in a JSON body, or None when any part is missing."""
    value = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def next_link(header: str | None) -> str | None:
    """The `rel="next"` target of an RFC 8288 Link header."""
    if not header:
        return None
    for match in _LINK_RE.finditer(header):
        for rel in _REL_RE.findall(match.group(2) or ""):
            if "next" in rel.lower().split():
                return match.group(1).strip()
    return None


class Paginator:
    """Walks one window: `current` is the next request, `advance` moves past a page."""

    def __init__(self, spec: ConnectorSpec, plan: Plan, drop_params: frozenset[str],
                 state: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.mode = spec.pagination.mode
        self.checkpoint_type = CHECKPOINT_TYPES[self.mode]
        steps = [PageRequest(s["url"], {k: v for k, v in s["params"].items()
                                        if k not in drop_params}) for s in plan.steps]
        self._steps = steps
        self._base = steps[0]
        if state is not None:
            self.state = dict(state)
        else:
            self.state = {"next": steps[0].to_dict(), **{
                "cursor": {"seen": []}, "link": {"seen": []}, "offset": {"offset": 0},
                "page": {"page": spec.pagination.first_page}, "time-window": {"step": 0},
                "none": {}}[self.mode]}

    @property
    def current(self) -> PageRequest | None:
        nxt = self.state.get("next")
        return None if nxt is None else PageRequest(nxt["url"], dict(nxt["params"]))

    def _violation(self, message: str) -> None:
        raise PaginationViolation(message, field="pagination")

    def advance(self, page: PageInfo) -> None:
        """Set the next request from `page`; raises PaginationViolation on a broken invariant."""
        pg = self.spec.pagination
        st = self.state
        nxt: PageRequest | None = None
        if self.mode == "cursor" and pg.response_field:
            cursor = field_value(page.body, pg.response_field)
            if cursor not in (None, ""):
                if not isinstance(cursor, str | int) or isinstance(cursor, bool):
                    raise InvalidArgument(f"cursor field {pg.response_field!r} is not a string",
                                          field=pg.response_field)
                cursor = str(cursor)
                self._check_new(cursor, "cursor")
                nxt = PageRequest(self._base.url, {**self._base.params,
                                                   str(pg.request_param): cursor})
        elif self.mode in ("cursor", "link"):
            if self.mode == "link":
                target = next_link(page.link_header)
            else:
                target = field_value(page.body, str(pg.next_url_field))
            if target not in (None, ""):
                if not isinstance(target, str):
                    raise InvalidArgument("next URL is not a string", field="pagination")
                url = urljoin(page.final_url, target)
                self._check_new(url, "next URL")
                nxt = PageRequest(url, {})
        elif self.mode in ("offset", "page"):
            nxt = self._arithmetic(page)
        elif self.mode == "time-window":
            if pg.page_size and page.records >= pg.page_size:
                self._violation(f"slice {st['step']} returned a full page ({page.records} "
                                "records): it may be truncated; shorten sliceSeconds")
            st["step"] += 1
            if st["step"] < len(self._steps):
                nxt = self._steps[st["step"]]
        st["next"] = None if nxt is None else nxt.to_dict()

    def _check_new(self, token: str, what: str) -> None:
        seen: list[str] = self.state["seen"]
        if token in seen:
            self._violation(f"the upstream returned a {what} it already returned "
                            f"(page {len(seen) + 1}): pagination does not advance")
        seen.append(token)

    def _arithmetic(self, page: PageInfo) -> PageRequest | None:
        pg = self.spec.pagination
        st = self.state
        size = int(pg.page_size or 0)
        total = field_value(page.body, pg.total_field) if pg.total_field else None
        if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
            raise InvalidArgument(f"total field {pg.total_field!r} is not an integer",
                                  field=pg.total_field)
        if self.mode == "offset":
            position, step = st["offset"], size
            past_end = total is not None and position >= total
        else:
            position, step = st["page"], 1
            past_end = total is not None and position > total
        if past_end and page.records:
            self._violation(f"{self.mode} {position} is past the declared total {total} "
                            f"but returned {page.records} records")
        if page.records > size:
            self._violation(f"page returned {page.records} records, more than pageSize {size}")
        if page.records < size or page.records == 0:
            # A short page ends the window, so it must also end the declared total;
            # otherwise records were skipped (no implicit skipping, seed 001).
            short = (position + page.records < total if self.mode == "offset"
                     else position < total) if total is not None else False
            if short:
                self._violation(f"{self.mode} {position} returned {page.records} of "
                                f"{size} records but the declared total {total} says "
                                "more follow: records were skipped")
            return None
        following = position + step
        if total is not None and (following >= total if self.mode == "offset"
                                  else following > total):
            return None
        if self.mode == "offset":
            st["offset"] = following
            return PageRequest(self._base.url, {**self._base.params,
                                                str(pg.offset_param): str(following)})
        st["page"] = following
        return PageRequest(self._base.url, {**self._base.params,
                                            str(pg.page_param): str(following)})
