"""Explicit time windows `[start, end)` in UTC, and how their bounds become request params.

There is no "now" here: every window is given, so a plan or a partition is reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .canonical import format_rfc3339
from .errors import UsageError
from .profile import TimeFormat, WindowFormat, WindowSpec

MAX_WINDOW = timedelta(days=366)
# Window bounds an upstream can take and our arithmetic can step past (a day, a slice)
# without leaving the range of `datetime`.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 1, tzinfo=UTC)
# RFC3339 `date-time` (offset optional here only so a naive value gets its own message);
# `datetime.fromisoformat` alone also takes ISO week dates, basic format and `T00Z`.
_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$")


def parse_rfc3339(text: str, *, field: str) -> datetime:
    """Parse an RFC3339 timestamp with an explicit offset, returned in UTC."""
    match = _RFC3339_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise UsageError(f"{field} {text!r} is not an RFC3339 timestamp "
                         "(e.g. 2026-02-01T00:00:00Z)", field=field)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise UsageError(f"{field} {text!r} is not an RFC3339 timestamp", field=field) from None
    if moment.tzinfo is None:
        raise UsageError(f"{field} {text!r} has no UTC offset; add 'Z' or '+00:00'", field=field)
    return _utc_in_range(moment, field=field, shown=repr(text))


def _utc_in_range(moment: datetime, *, field: str, shown: str) -> datetime:
    """`moment` in UTC, refused (usage error) outside EARLIEST..LATEST."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise UsageError(f"{field} {shown} is outside {format_rfc3339(EARLIEST)} .. "
                         f"{format_rfc3339(LATEST)} once converted to UTC", field=field)
    return utc


@dataclass(frozen=True, order=True)
class Window:
    """A half-open UTC window; construct with `Window.parse` or from aware datetimes."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise UsageError("window bounds need a UTC offset", field="window")
        # Windows built from datetimes (partitions, probes) get the range check too.
        object.__setattr__(self, "start", _utc_in_range(
            self.start, field="window-start", shown=self.start.isoformat()))
        object.__setattr__(self, "end", _utc_in_range(
            self.end, field="window-end", shown=self.end.isoformat()))
        if self.end <= self.start:
            raise UsageError(f"window end {format_rfc3339(self.end)} must be after start "
                             f"{format_rfc3339(self.start)}", field="window-end")
        if self.end - self.start > MAX_WINDOW:
            raise UsageError("a window may span at most 366 days; split it into partitions",
                             field="window-end")

    @classmethod
    def parse(cls, start: str, end: str) -> Window:
        return cls(parse_rfc3339(start, field="window-start"),
                   parse_rfc3339(end, field="window-end"))

    def to_dict(self) -> dict[str, str]:
        return {"start": format_rfc3339(self.start), "end": format_rfc3339(self.end)}

    def slices(self, seconds: int) -> list[Window]:
        """Consecutive sub-windows of `seconds` each; the last one may be shorter."""
        out: list[Window] = []
        step = timedelta(seconds=seconds)
        cursor = self.start
        while cursor < self.end:
            out.append(Window(cursor, min(cursor + step, self.end)))
            cursor += step
        return out

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def count_slices(window: Window, seconds: int) -> int:
    total = (window.end - window.start).total_seconds()
    return int(-(-total // seconds))


def format_bound(moment: datetime, fmt: WindowFormat | TimeFormat) -> str:
    """One window bound as the upstream expects it."""
    moment = moment.astimezone(UTC)
    if fmt == "rfc3339":
        return format_rfc3339(moment)
    if fmt == "date":
        return moment.date().isoformat()
    epoch = moment - datetime(1970, 1, 1, tzinfo=UTC)
    if fmt == "epoch_s":
        return str(epoch // timedelta(seconds=1))
    return str(epoch // timedelta(milliseconds=1))


def window_params(window: Window, spec: WindowSpec) -> dict[str, str]:
    """Request params for a window `[start, end)`.

    An inclusive-end upstream still gets the end itself for instant formats: end minus one
    unit would exclude every instant between the two (a record at 23:59:59.5 would be lost
    from both neighbouring windows); what it returns at exactly the end is dropped later.
    """
    params: dict[str, str] = {}
    if spec.start_param:
        params[spec.start_param] = format_bound(window.start, spec.format)
    if spec.end_param:
        end = window.end
        if spec.format == "date":
            # A date names a whole day: the last day holding any instant of [start, end)
            # when the end is inclusive, else the first day after it (a bound inside a day
            # must not cut that day off; records outside the window are dropped later).
            last = (end - timedelta(microseconds=1)).date()
            day = last if spec.end_inclusive else last + timedelta(days=1)
            end = datetime(day.year, day.month, day.day, tzinfo=UTC)
        params[spec.end_param] = format_bound(end, spec.format)
    return params
