"""Per-profile request budgets (maxRequestsPerMinute), shared by every request of a run.

A token bucket keyed by connector: two windows of one connector fetched at once share one
budget, so the upstream never sees more than the profile promises. The windows may be
threads of one process or worker processes (`runtime/workers.py`): before a run hands a
window to a worker, its connector's bucket moves its state into shared memory under a
process-shared lock (`share`), and the worker registers that very bucket for the same key,
so the budget holds across them. Until then a bucket is plain memory and a thread lock
(no semaphore, no helper process for a CLI run).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.sharedctypes import RawArray
from typing import Any

from ..core.catalog import ResolvedProfile
from ..core.errors import RateLimited

#: the start method of worker processes, and so of the locks they inherit
WORKER_START_METHOD = "spawn"
_TOKENS, _LAST = 0, 1  # the two cells of a bucket's state
#: how long a waiter holds on to a lock before looking whether the bucket has a new one
_STALE_LOCK_SECONDS = 0.5


class TokenBucket:
    """`rate_per_minute` tokens per minute with a burst of `burst`; time and sleep injectable."""

    def __init__(self, rate_per_minute: int, burst: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 initial: float | None = None) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = float(burst or max(1, min(rate_per_minute, 10)))
        tokens = self.capacity if initial is None else min(initial, self.capacity)
        self._clock = clock
        self._state: Any = [tokens, clock()]
        self._lock: Any = threading.Lock()

    @property
    def shared(self) -> bool:
        return not isinstance(self._state, list)

    def share(self) -> None:
        """Move the state into shared memory under a lock worker processes inherit, keeping
        its tokens; safe while other threads draw on the bucket. The clock must be the
        system-wide `time.monotonic` (the default)."""
        with self._lock:
            if self.shared:
                return
            self._state = RawArray("d", list(self._state))
            self._lock = multiprocessing.get_context(WORKER_START_METHOD).Lock()

    def unshare(self) -> None:
        """Move the state back to plain memory under a thread lock, keeping its tokens: once
        every worker process has exited. A worker killed while it held the shared lock (a
        broken pool's workers are killed wherever they are) would hold it forever, so the
        old lock is waited for only briefly."""
        if not self.shared:
            return
        old = self._lock
        # Once the workers are gone only a step thread can hold it, for microseconds; one
        # stalled longer than this could at worst spend a token the new state misses.
        held = old.acquire(timeout=_STALE_LOCK_SECONDS)
        try:
            self._state = [self._state[_TOKENS], self._state[_LAST]]
            self._lock = threading.Lock()
        finally:
            if held:
                old.release()

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The state, under the bucket's lock: the new one if the bucket was shared or
        unshared while this thread waited on the old one (which may never be released)."""
        while True:
            lock = self._lock
            if not lock.acquire(timeout=_STALE_LOCK_SECONDS):
                continue
            try:
                if lock is self._lock:
                    yield self._state
                    return
            finally:
                lock.release()

    def reserve(self) -> float:
        """Take a token; returns how long the caller must wait before sending (0 if none)."""
        with self._locked() as state:
            now = self._clock()
            tokens = min(self.capacity, state[_TOKENS] + (now - state[_LAST]) * self.rate) - 1.0
            state[_TOKENS], state[_LAST] = tokens, now
            return 0.0 if tokens >= 0 else -tokens / self.rate

    def acquire(self, *, max_wait: float, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait for a token; beyond `max_wait` surface `rate_limited` with a Retry-After."""
        wait = self.reserve()
        if wait > max_wait:
            with self._locked() as state:
                state[_TOKENS] += 1.0
            raise RateLimited(f"request budget exhausted: next slot in {wait:.1f}s exceeds the "
                              f"{max_wait:.1f}s allowed", retry_after=wait)
        if wait > 0:
            sleep(wait)
        return wait


BucketKey = tuple[str, int, int | None]
_BUCKETS: dict[BucketKey, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def bucket_key(resolved: ResolvedProfile) -> BucketKey:
    """The registry key of a connector's budget: its name and its limit."""
    ref, limit = resolved.ref, resolved.spec.rate_limit
    return f"{ref.namespace}/{ref.name}", limit.max_requests_per_minute, limit.burst


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


def adopt_bucket(key: BucketKey, bucket: TokenBucket) -> None:
    """Register a bucket inherited from the parent process (in a worker process)."""
    with _BUCKETS_LOCK:
        _BUCKETS[key] = bucket
