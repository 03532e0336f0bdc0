"""Retry classification (docs/contract.md#retry) and a bounded retry loop built on tenacity.

An error class says whether it may be retried (`ChartlyError.retryable`): transient and
throttled failures, and bodies that do not decode, are retried with capped exponential
backoff and jitter, honouring Retry-After; permanent and auth failures never are; a
per-window budget makes infinite retries impossible even across many pages.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from ..core.errors import (
    ChartlyError,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    UpstreamError,
    UpstreamUnavailable,
)
from ..core.profile import RetrySpec
from .http import GuardedResponse

T = TypeVar("T")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date relative to `now`), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def classify_response(response: GuardedResponse, now: datetime) -> UpstreamError | None:
    """The error a response stands for (None for success); a 4xx quotes the upstream's
    own explanation, scrubbed and bounded (`GuardedResponse.excerpt`)."""
    status = response.status_code
    said = response.excerpt() if 400 <= status < 500 else ""
    return classify_status(status, response.headers, response.url, now, said=said)


def classify_status(status: int, headers: Mapping[str, str], url: str, now: datetime, *,
                    said: str = "") -> UpstreamError | None:
    """The error a non-2xx status stands for (None for success); `said` is an excerpt of
    the upstream's error body, already scrubbed, quoted in the message."""
    if 200 <= status < 300:
        return None
    where = f"HTTP {status} from {url}"
    said = f"; upstream said: {said}" if said else ""
    if status == 401:
        return Unauthenticated(f"{where}: credentials rejected (check auth.secretRef){said}",
                               status=status)
    if status == 403:
        return PermissionDenied(f"{where}: access denied{said}", status=status)
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        return RateLimited(f"{where}: upstream rate limit{said}", status=status,
                           retry_after=retry_after)
    if status in (408, 425) or status >= 500:
        return UpstreamUnavailable(f"{where}: upstream unavailable{said}", status=status,
                                   retry_after=parse_retry_after(headers.get("retry-after"), now))
    return InvalidArgument(f"{where}: request rejected{said}", status=status)


class RetryBudget:
    """Retries left for one window; shared by every page of it."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.used = 0

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        self.used += 1
        return True


class RetryPolicy:
    """Runs one request attempt function under the profile's retry spec."""

    def __init__(self, spec: RetrySpec, budget: RetryBudget, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None,
                 on_retry: Callable[[UpstreamError, float], None] | None = None) -> None:
        self.spec = spec
        self.budget = budget
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_retry = on_retry

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.spec.max_backoff_ms, self.spec.backoff_ms * 2 ** (attempt - 1)) / 1000
        return self._rng.uniform(ceiling / 2, ceiling) if self.spec.jitter else ceiling

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return self._backoff(state.attempt_number)

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if state.attempt_number >= self.spec.max_attempts:
            return True
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and retry_after * 1000 > self.spec.max_retry_after_ms:
            return True
        return not self.budget.take()

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if self._on_retry is not None and isinstance(exc, UpstreamError):
            self._on_retry(exc, state.upcoming_sleep)

    def call(self, attempt: Callable[[], T]) -> T:
        """Call `attempt` until it succeeds or the class, attempts or budget say stop."""
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, ChartlyError) and e.retryable),
            stop=self._stop, wait=self._wait, sleep=self._sleep,
            before_sleep=self._before_sleep, reraise=True)
        return retrying(attempt)
