"""Fault injection: what can go wrong with one response, and on which requests it does.

Tests add faults while the sandbox runs (`sb.faults.add(Fault("status", status=503))`);
each fault matches an endpoint and the per-endpoint request ordinal, fires `times` times
and then clears itself, which is how a test says "fail once, then succeed".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal, get_args

from .data import ENDPOINTS

FaultKind = Literal["status", "redirect", "slow", "hold", "reset", "truncated", "malformed",
                    "oversized", "duplicate", "skip", "stuck_cursor"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
#: One line per kind, for `sandbox serve --list` and the sandbox's `GET /`.
FAULT_SUMMARIES: dict[str, str] = {
    "status": "answer a 4xx/5xx instead of the page (default 503; status=429 etc.)",
    "redirect": "answer a 3xx redirect to / instead of the page",
    "slow": "hold the response before sending it (delay_ms)",
    "hold": "send nothing until released (from the CLI: never, so the client's timeout fires)",
    "reset": "send half the body, then reset the connection",
    "truncated": "send half the body with a matching Content-Length",
    "malformed": "a 200 whose body is not JSON",
    "oversized": "the page padded by 20 MiB",
    "duplicate": "the page starts with the previous page's last record again",
    "skip": "the page drops its first record",
    "stuck_cursor": "the continuation points at this same page again",
}
HEALTH_PATH = "/health"
ME_PATH = "/v1/me"
KNOWN_PATHS: frozenset[str] = frozenset({*ENDPOINTS, HEALTH_PATH, ME_PATH})


@dataclass
class Fault:
    """One injected failure; only the parameters of its `kind` are used.

    Matching: `endpoint` is a request path (None: every path but /health); the fault may
    fire on the endpoint's `on_request`-th request (1-based, counted since start or the
    last `Sandbox.clear_requests`) and on every `every`-th request after it, `times` times
    in all (None: forever). `query` (name -> value) narrows it to requests carrying those
    parameters: when a client fetches several windows at once the arrival order of their
    requests is not fixed, but "window X's second page" is. At most one fault fires per
    request: the first added that matches.

    Kinds and their parameters:
      status       `status` (default 503; e.g. 429, 500, 502, 503, 401, 403), optional
                   `retry_after_s` sent as Retry-After in `retry_after_format`
                   ("seconds" or "http-date").
      redirect     `status` (default 302; 301/302/303/307/308) to `location`.
      slow         sleep `delay_ms`, before anything is sent (`phase="headers"`) or after
                   part of the body (`phase="body"`).
      hold         send nothing until the test calls `release()` (the request is already in
                   the request log): a condition a test waits for instead of a duration.
      reset        send headers and `cut_fraction` of the body, then RST the connection.
      truncated    send the first `cut_fraction` of the body with a matching Content-Length.
      malformed    a 200 whose body is not JSON.
      oversized    the page plus a `pad_bytes` padding field.
      duplicate    the page starts with the previous page's last record again.
      skip         the page drops its first record (the continuation still advances).
      stuck_cursor the continuation (cursor, next URL, Link) points at this same page again;
                   endpoints whose client computes the next request ignore it.
    """

    kind: FaultKind
    endpoint: str | None = None
    on_request: int = 1
    every: int = 1
    times: int | None = 1
    query: dict[str, str] | None = None
    status: int | None = None
    retry_after_s: int | None = None
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    delay_ms: int = 0
    phase: Literal["headers", "body"] = "headers"
    cut_fraction: float = 0.5
    pad_bytes: int = 20 * 1024 * 1024
    location: str = "/"
    fired: int = field(default=0, init=False)
    released: threading.Event = field(default_factory=threading.Event, init=False,
                                      repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.endpoint is not None and self.endpoint not in KNOWN_PATHS:
            raise ValueError(f"fault endpoint {self.endpoint!r} is not a sandbox path; one of "
                             f"{sorted(KNOWN_PATHS)}")  # a typo would never fire
        if self.on_request < 1 or self.every < 1 or (self.times is not None and self.times < 1):
            raise ValueError("on_request, every and times must be >= 1")
        if self.status is None:
            self.status = 302 if self.kind == "redirect" else 503
        if self.kind == "redirect" and self.status not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirect status must be a 3xx redirect, not {self.status}")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValueError(f"status fault needs a 4xx/5xx status, not {self.status}")
        if not 0.0 <= self.cut_fraction < 1.0:
            raise ValueError("cut_fraction must be in [0, 1)")
        if self.delay_ms < 0 or self.pad_bytes < 0:
            raise ValueError("delay_ms and pad_bytes must be >= 0")

    def release(self) -> None:
        """Let every request this `hold` fault holds (or will hold) proceed."""
        self.released.set()

    def matches(self, path: str, ordinal: int, query: dict[str, str] | None = None) -> bool:
        """Whether this fault applies to the `ordinal`-th request to `path` with `query`."""
        if self.endpoint is None:
            if path == HEALTH_PATH:
                return False
        elif self.endpoint != path:
            return False
        if self.query is not None and any(
                (query or {}).get(name) != value for name, value in self.query.items()):
            return False
        return ordinal >= self.on_request and (ordinal - self.on_request) % self.every == 0


#: The kinds whose `=VALUE` in a fault spec means something, and which field it sets.
_SPEC_VALUE_FIELD = {"status": "status", "redirect": "status", "slow": "delay_ms"}
FAULT_SPEC_SYNTAX = "KIND[=VALUE]:ENDPOINT[:ON_REQUEST[:TIMES]]"


def parse_fault_spec(text: str) -> Fault:
    """A `Fault` from the command line's `KIND[=VALUE]:ENDPOINT[:ON_REQUEST[:TIMES]]`.

    VALUE is the status of `status`/`redirect` and the delay in ms of `slow`; ENDPOINT is
    a sandbox path or `*` (every path); the fault fires on the ON_REQUEST-th request to it
    (default 1) and on the TIMES-1 requests after it (default 1), so `status=500:/v1/events:3:4`
    outlasts a client's four attempts and fails the window, and a re-run then resumes.
    ValueError names what is wrong.
    """
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not all(parts):
        raise ValueError(f"fault {text!r} must look like {FAULT_SPEC_SYNTAX}, "
                         "e.g. status=429:/v1/events:2")
    kind, _, value = parts[0].partition("=")
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault {text!r}: unknown kind {kind!r}; one of "
                         f"{', '.join(sorted(FAULT_KINDS))}")
    params: dict[str, int] = {}
    if value:
        if kind not in _SPEC_VALUE_FIELD:
            raise ValueError(f"fault {text!r}: kind {kind!r} takes no =VALUE (only "
                             f"{', '.join(sorted(_SPEC_VALUE_FIELD))} do)")
        params[_SPEC_VALUE_FIELD[kind]] = _spec_int(text, "VALUE", value)
    endpoint = None if parts[1] == "*" else parts[1]
    on_request = _spec_int(text, "ON_REQUEST", parts[2]) if len(parts) > 2 else 1
    times = _spec_int(text, "TIMES", parts[3]) if len(parts) > 3 else 1
    try:
        return Fault(kind, endpoint=endpoint, on_request=on_request, times=times,  # type: ignore[arg-type]
                     **params)
    except ValueError as exc:
        raise ValueError(f"fault {text!r}: {exc}") from None


def _spec_int(text: str, what: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ValueError(f"fault {text!r}: {what} must be a whole number, not {value!r}")
    return int(value)


class FaultPlan:
    """The faults a running sandbox applies; safe to change from a test while it serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Arm `fault`; returns it so a test can later read `fault.fired`."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """Faults that may still fire."""
        with self._lock:
            return list(self._faults)

    def take(self, path: str, ordinal: int, query: dict[str, str] | None = None) -> Fault | None:
        """The fault this request gets, counted as fired (and dropped once exhausted)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, ordinal, query):
                    fault.fired += 1
                    if fault.times is not None and fault.fired >= fault.times:
                        self._faults.remove(fault)
                    return fault
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)
