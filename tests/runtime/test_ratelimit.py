"""Request budgets: the token bucket with an injected clock, one bucket per connector shared
by every window of it, and `rate_limited` with Retry-After when the wait is too long.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

from chartly_dagster.core.errors import ExitCode, RateLimited
from chartly_dagster.runtime.ratelimit import WORKER_START_METHOD, TokenBucket, bucket_for
from tests.support.live import DAY, Live, RecordingSleep, written_ids

pytestmark = pytest.mark.usefixtures("fresh_rate_buckets")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_waits_grow_and_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock)  # one token a second
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 1.0, 2.0]
    clock.now += 10  # refills to the burst, never beyond it
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_default_burst_is_bounded() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock)
    waits = [bucket.reserve() for _ in range(11)]
    assert waits[:10] == [0.0] * 10 and waits[10] == pytest.approx(0.1)


def test_acquire_sleeps_the_wait_or_raises_rate_limited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst=1, clock=clock)
    sleep = RecordingSleep()
    assert bucket.acquire(max_wait=5, sleep=sleep) == 0.0
    assert bucket.acquire(max_wait=5, sleep=sleep) == 1.0
    assert sleep.calls == [1.0]
    with pytest.raises(RateLimited) as info:
        bucket.acquire(max_wait=0.5, sleep=sleep)
    assert info.value.retry_after == pytest.approx(2.0)
    assert info.value.exit_code == ExitCode.VALIDATION_FAILED
    assert sleep.calls == [1.0]
    # The refused request gave its token back: after the wait it is served.
    clock.now += 2
    assert bucket.acquire(max_wait=0.5, sleep=sleep) == 0.0


def test_a_shared_bucket_keeps_its_tokens_and_its_arithmetic() -> None:
    """Sharing (before a worker process inherits the bucket) moves the state, not resets
    it, and every path takes the shared lock."""
    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock)
    assert bucket.reserve() == 0.0 and not bucket.shared
    bucket.share()
    bucket.share()  # once is enough
    assert bucket.shared
    assert [bucket.reserve() for _ in range(3)] == [0.0, 1.0, 2.0]
    with pytest.raises(RateLimited):  # the refund path takes the shared lock too
        bucket.acquire(max_wait=0.5, sleep=RecordingSleep())
    clock.now += 10
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def _hold_the_lock(bucket: TokenBucket, holding: Any) -> None:
    """In a worker process: take the bucket's shared lock and keep it until killed."""
    with bucket._locked():
        holding.set()
        threading.Event().wait()


def test_a_lock_a_killed_worker_held_is_left_behind_by_unshare() -> None:
    """A broken pool's workers are killed wherever they are, maybe holding the shared lock.
    Once they are gone, `unshare` gives the bucket a thread lock with its tokens, and a
    thread already waiting on the dead lock takes the new one."""
    bucket = TokenBucket(60, burst=2, clock=FakeClock())
    assert bucket.reserve() == 0.0
    bucket.share()
    context = multiprocessing.get_context(WORKER_START_METHOD)
    holding = context.Event()
    worker = context.Process(target=_hold_the_lock, args=(bucket, holding), daemon=True)
    worker.start()
    try:
        assert holding.wait(120)  # the limit only ends a broken run
        waits: list[float] = []
        waiter = threading.Thread(target=lambda: waits.append(bucket.reserve()), daemon=True)
        waiter.start()
        assert waiter.is_alive()  # it cannot get the lock while the worker holds it
        worker.kill()
        worker.join()
        bucket.unshare()
        waiter.join(120)
        assert not waiter.is_alive() and not bucket.shared
        assert waits == [0.0]  # the burst's second token, kept through both moves
        assert bucket.reserve() == 1.0
    finally:
        if worker.is_alive():
            worker.kill()


def test_bucket_for_is_one_bucket_per_connector_and_rate() -> None:
    a = bucket_for("tenant/project/x", 600)
    assert bucket_for("tenant/project/x", 600) is a
    assert bucket_for("tenant/project/y", 600) is not a
    assert bucket_for("tenant/project/x", 300) is not a


def test_two_windows_of_one_connector_share_the_budget(live: Live, tmp_path) -> None:
    variant = live.add_variant("sales-feed", "devslowrate",
                               {"rateLimit": {"maxRequestsPerMinute": 60, "burst": 2}})
    first_sleep, second_sleep = RecordingSleep(), RecordingSleep()
    first = live.fetch("sales-feed", DAY, variant=variant, sleep=first_sleep,
                       dest=tmp_path / "a")
    # six requests, one free (a process starts with one token, not a burst): five waits,
    # growing (the fake sleep does not refill)
    assert len(first_sleep.calls) == 5
    assert first_sleep.calls == sorted(first_sleep.calls) and first_sleep.calls[0] > 0.5
    second = live.fetch("sales-feed", DAY, variant=variant, sleep=second_sleep,
                        dest=tmp_path / "b")
    # The second window starts in the first one's debt: its very first request waits.
    assert len(second_sleep.calls) == 6 and second_sleep.calls[0] > first_sleep.calls[-1] - 1
    assert written_ids(first) == written_ids(second) == live.truth_ids("sales-feed", DAY)


def test_budget_wait_beyond_max_retry_after_fails_rate_limited(live: Live) -> None:
    variant = live.add_variant("sales-feed", "devtinyrate", {
        "rateLimit": {"maxRequestsPerMinute": 1, "burst": 1},
        "retry": {"maxRetryAfterMs": 500}})
    sleep = RecordingSleep()
    with pytest.raises(RateLimited) as info:
        live.fetch("sales-feed", DAY, variant=variant, sleep=sleep)
    assert info.value.exit_code == 4 and info.value.platform_code == "rate_limited"
    assert info.value.retry_after == pytest.approx(60, abs=1)
    assert "request budget exhausted" in info.value.message
    assert live.sandbox.request_count("/v1/feed") == 1 and sleep.calls == []
