"""Deterministic synthetic records for any time window, computed by arithmetic.

The sandbox never stores its data set: record `i` of an endpoint's stream is a pure
function of (seed, endpoint, rate, i), and its time is non-decreasing in `i`, so a
window `[start, end)` maps to an index range `[lo, hi)` in O(1) and a page is rendered
only when it is served. Same seed, same bytes: tests compare what a client wrote with
`Stream.records(lo, hi)` instead of a fixture file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import orjson

#: Index 0 of every stream sits here; earlier windows use negative indexes.
ORIGIN_EPOCH_S = 1_767_225_600  # 2026-01-01T00:00:00Z
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd, so i -> salt + i * _GOLDEN is injective mod 2**64
MAX_EVENTS_PER_HOUR = 3600 * 10_000

TimeStyle = Literal["rfc3339", "rfc3339_ms", "epoch_s", "epoch_ms"]
#: time units per second a stream's events are placed at: rfc3339_ms events fall between
#: whole seconds (e.g. 23:59:59.500Z), the others on them
TICKS_PER_SECOND = {"rfc3339": 1, "rfc3339_ms": 1000, "epoch_s": 1, "epoch_ms": 1}


@dataclass(frozen=True)
class EndpointShape:
    """How one endpoint names and formats its records' id and time fields."""

    path: str
    id_key: str
    id_prefix: str
    time_key: str
    time_style: TimeStyle


ENDPOINTS: dict[str, EndpointShape] = {
    shape.path: shape for shape in (
        EndpointShape("/v1/events", "id", "evt_", "occurred_at", "rfc3339"),
        EndpointShape("/v1/feed", "id", "itm_", "occurred_at", "rfc3339"),
        EndpointShape("/v2/orders", "order_id", "ord_", "created", "epoch_s"),
        EndpointShape("/v1/invoices", "invoice_id", "inv_", "issued_at", "rfc3339"),
        EndpointShape("/v1/metrics", "metric_id", "met_", "ts", "epoch_ms"),
        EndpointShape("/v1/tickets", "ticket_id", "tkt_", "updated_at", "rfc3339"),
        EndpointShape("/v2/events", "id", "ev2_", "occurred_at", "rfc3339"),
        EndpointShape("/v2/tickets", "ticket_id", "tk2_", "updated_at", "rfc3339"),
        EndpointShape("/v1/logs", "log_id", "log_", "logged_at", "rfc3339"),
        EndpointShape("/v1/readings", "reading_id", "rdg_", "measured_at", "rfc3339_ms"),
        EndpointShape("/v1/exports", "export_id", "exp_", "created_at", "rfc3339"),
    )
}

_CURRENCY_BYTES = (b"EUR", b"USD", b"GBP", b"CHF", b"SEK", b"JPY", b"PLN", b"NOK")
_FIRST_NAMES = ("Zoë", "José", "Åsa", "Björn", "Chloé", "Dmitrij", "Łukasz", "Renée",
                "Søren", "Ana María", "François", "Jürgen", "Núria", "Ögedei", "Siân", "Zoltán")
_LAST_NAMES = ("Müller", "Núñez", "O'Brien", "Škoda", "Dvořák", "Ångström", "Łęcki",
               "García-Márquez", "Nguyễn", "Øvergaard", "Çelik", "Straße", "Kovač", "Þórsson",
               "D\"Angelo", "Van der Berg")
# Texts exercise a client's decoding: accents, dashes, emoji, CJK, RTL, and JSON escapes;
# look-alike characters are the point here, hence the RUF001 waivers.
_TEXTS = (
    "Zoë – café ☕", "naïve façade — crème brûlée", "日本語のテキスト",  # noqa: RUF001
    "emoji 🚀✨ launch", "Ωmega ≠ ∞", "quote \" and backslash \\ here",
    "tab\there, newline\nthere", "שלום עולם", "Привет, мир", "plain ascii text",
    "€ 1.234,56 paid", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "Ελληνικά κείμενο",  # noqa: RUF001
    "控制字符 \u0001 escaped", "mañana · über · smørrebrød", "✔ done",
)


def _mix64(x: int) -> int:
    """splitmix64 finalizer: a bijection on 64-bit ints, so distinct inputs keep distinct ids."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _salt(seed: int, path: str) -> int:
    digest = hashlib.blake2b(f"{seed}|{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@lru_cache(maxsize=16)
def _pools(seed: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Pre-rendered customer objects and text strings (JSON), so a record is one %-format."""
    customers = []
    for k in range(256):
        h = _mix64((_salt(seed, "customers") + k * _GOLDEN) & _MASK)
        name = f"{_FIRST_NAMES[k & 15]} {_LAST_NAMES[k >> 4]}"
        customers.append(orjson.dumps({"id": f"cus_{h & 0xFFFFFFFFFF:010x}", "name": name}))
    return tuple(customers), tuple(orjson.dumps(t) for t in _TEXTS)


@lru_cache(maxsize=4096)
def _day_text(day_number: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day_number)).isoformat()


@lru_cache(maxsize=4096)
def _day_bytes(day_number: int) -> bytes:
    return _day_text(day_number).encode()


@lru_cache(maxsize=1)
def _clock_texts() -> tuple[bytes, ...]:
    """b"HH:MM:SS" for every second of a day: a lookup beats three divmods per record."""
    return tuple(b"%02d:%02d:%02d" % (h, m, s) for h in range(24) for m in range(60)
                 for s in range(60))


def format_rfc3339(epoch_s: int) -> str:
    """RFC3339 UTC with `Z`, whole seconds, as every rfc3339 endpoint renders it."""
    day_number, second = divmod(epoch_s, 86400)
    return f"{_day_text(day_number)}T{_clock_texts()[second].decode()}Z"


class Stream:
    """One endpoint's infinite, deterministic event stream at a fixed rate.

    Event `i` lives in its slot `[floor(i*3600*T/R), floor((i+1)*3600*T/R))` ticks after
    ORIGIN (T ticks per second: 1, or 1000 for millisecond times), at a seeded offset inside
    the slot, so times never decrease and a window maps to indexes without a search.
    """

    def __init__(self, path: str, seed: int, events_per_hour: int) -> None:
        if path not in ENDPOINTS:
            raise ValueError(f"unknown sandbox endpoint {path!r}; one of {sorted(ENDPOINTS)}")
        if not 1 <= events_per_hour <= MAX_EVENTS_PER_HOUR:
            raise ValueError(f"events_per_hour must be 1..{MAX_EVENTS_PER_HOUR}")
        self.shape = ENDPOINTS[path]
        self.seed = seed
        self.rate = events_per_hour
        self._salt = _salt(seed, path)
        self._customers, self._texts = _pools(seed)
        shape = self.shape
        self.ticks = TICKS_PER_SECOND[shape.time_style]
        time_value = {"rfc3339": '"%sT%sZ"', "rfc3339_ms": '"%sT%s.%03dZ"'}.get(
            shape.time_style, "%d")
        # One bytes %-template per endpoint: a record is a hash plus one format call, and
        # a page is a bytes join (no str -> UTF-8 encode of a 200 KB body).
        self._template = (
            f'{{"{shape.id_key}":"{shape.id_prefix}%016x","{shape.time_key}":{time_value},'
            '"amount":%d.%02d,"currency":"%s","customer":%s,"text":%s}').encode()

    def _hash(self, i: int) -> int:
        return _mix64((self._salt + i * _GOLDEN) & _MASK)

    def _time_rel(self, i: int, h: int) -> int:
        span = 3600 * self.ticks
        base = (i * span) // self.rate
        width = ((i + 1) * span) // self.rate - base
        return base + (h % width if width else 0)

    def ticks_of(self, i: int) -> int:
        """Epoch time of event `i` in the stream's ticks (seconds, or milliseconds)."""
        return ORIGIN_EPOCH_S * self.ticks + self._time_rel(i, self._hash(i))

    def time_of(self, i: int) -> int:
        """Epoch seconds of event `i` (rounded down for millisecond streams)."""
        return self.ticks_of(i) // self.ticks

    def first_index_at_ticks(self, t: int) -> int:
        """Smallest `i` with `ticks_of(i) >= t`."""
        rel = t - ORIGIN_EPOCH_S * self.ticks
        k = -((-rel * self.rate) // (3600 * self.ticks))  # first slot starting at or after rel
        return k - 1 if self.ticks_of(k - 1) >= t else k

    def first_index_at_or_after(self, epoch_s: int) -> int:
        """Smallest `i` with `time_of(i) >= epoch_s`: where a window starting there begins."""
        return self.first_index_at_ticks(epoch_s * self.ticks)

    def index_range(self, start_s: int, end_s: int) -> tuple[int, int]:
        """Indexes `[lo, hi)` of the events in the window `[start_s, end_s)` (epoch seconds)."""
        return self.index_range_ticks(start_s * self.ticks, end_s * self.ticks)

    def index_range_ticks(self, start: int, end: int) -> tuple[int, int]:
        """Indexes `[lo, hi)` of the events in `[start, end)`, bounds in the stream's ticks."""
        lo = self.first_index_at_ticks(start)
        hi = self.first_index_at_ticks(end)
        return lo, max(lo, hi)

    def render(self, lo: int, hi: int) -> list[bytes]:
        """JSON (UTF-8) of events `lo..hi-1`, one bytes object each, in the endpoint's shape."""
        out: list[bytes] = []
        # The serving hot path: _mix64 and _time_rel are inlined and everything is a local
        # name, which together take ~30% off the cost of a record.
        append, template = out.append, self._template
        customers, texts, currencies = self._customers, self._texts, _CURRENCY_BYTES
        salt, rate, style = self._salt, self.rate, self.shape.time_style
        day_bytes, clock, mask, golden = _day_bytes, _clock_texts(), _MASK, _GOLDEN
        span, origin = 3600 * self.ticks, ORIGIN_EPOCH_S * self.ticks
        for i in range(lo, hi):
            x = (salt + i * golden) & mask
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
            h = x ^ (x >> 31)
            base = (i * span) // rate
            width = ((i + 1) * span) // rate - base
            t = origin + base + (h % width if width else 0)
            cents = (h >> 16) % 99_900 + 100
            tail = (cents // 100, cents % 100, currencies[(h >> 40) & 7],
                    customers[(h >> 44) & 255], texts[(h >> 52) & 15])
            if style == "rfc3339":
                day_number, second = divmod(t, 86400)
                append(template % (h, day_bytes(day_number), clock[second], *tail))
            elif style == "rfc3339_ms":
                day_number, ms = divmod(t, 86_400_000)
                append(template % (h, day_bytes(day_number), clock[ms // 1000], ms % 1000,
                                   *tail))
            else:
                append(template % (h, t * 1000 if style == "epoch_ms" else t, *tail))
        return out

    def records(self, lo: int, hi: int) -> list[dict[str, Any]]:
        """Events `lo..hi-1` parsed back from the exact bytes the API serves."""
        return orjson.loads(b"[" + b",".join(self.render(lo, hi)) + b"]")


def to_epoch_seconds(moment: datetime | str | int) -> int:
    """Window bound as epoch seconds, rounded up: a bound between seconds excludes that second.

    Times are whole seconds, so `t >= 12.5` is `t >= 13`; accepting datetimes, RFC3339 text
    and ints lets tests name a window the way the endpoint under test does.
    """
    if isinstance(moment, int):
        return moment
    if isinstance(moment, str):
        moment = parse_rfc3339(moment)
    if moment.tzinfo is None:
        raise ValueError("window bounds need a UTC offset")
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    seconds, micros = delta.days * 86400 + delta.seconds, delta.microseconds
    return seconds + (1 if micros else 0)


def to_epoch_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds, rounded down."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC3339 timestamp that carries an offset; raise ValueError otherwise."""
    if "T" not in text.upper():
        raise ValueError(f"{text!r} is not an RFC3339 timestamp")
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment
