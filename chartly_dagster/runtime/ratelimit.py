"""Per-profile request budgets (maxRequestsPerMinute), shared by every request in the process.

A token bucket keyed by connector: two windows of one connector fetched at once share one
budget, so the upstream never sees more than the profile promises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..core.errors import RateLimited


class TokenBucket:
    """`rate_per_minute` tokens per minute with a burst of `burst`; time and sleep injectable."""

    def __init__(self, rate_per_minute: int, burst: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 initial: float | None = None) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = float(burst or max(1, min(rate_per_minute, 10)))
        self._tokens = self.capacity if initial is None else min(initial, self.capacity)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; returns how long the caller must wait before sending (0 if none)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, *, max_wait: float, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait for a token; beyond `max_wait` surface `rate_limited` with a Retry-After."""
        wait = self.reserve()
        if wait > max_wait:
            with self._lock:
                self._tokens += 1.0
            raise RateLimited(f"request budget exhausted: next slot in {wait:.1f}s exceeds the "
                              f"{max_wait:.1f}s allowed", retry_after=wait)
        if wait > 0:
            sleep(wait)
        return wait


_BUCKETS: dict[tuple[str, int, int | None], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def bucket_for(key: str, rate_per_minute: int, burst: int | None = None) -> TokenBucket:
    """The process-wide bucket for one connector (a new rate gets a new bucket).

    It starts with one token, not a full burst: when the connector's Dagster pool hands
    the upstream from one process to the next, the newcomer must not add a burst on top
    of the rate the previous process just used.
    """
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get((key, rate_per_minute, burst))
        if bucket is None:
            bucket = _BUCKETS[(key, rate_per_minute, burst)] = TokenBucket(
                rate_per_minute, burst, initial=1.0)
        return bucket
