"""How many windows to keep in flight: as many as help, never more than the ceiling.

Windows in flight pay off while a process waits on its upstream (latency, a slow server):
each extra window overlaps another's waiting. They cost when the process is already busy
with its CPU: windows run on threads under one GIL, so against a fast upstream (loopback,
the same rack) four windows fetch no faster than one and add GIL hand-offs and a writer's
memory each (measured on 2 cores, a 30-window range: 18.7 s and 295 MB with four windows
against 15.7 s and 233 MB with one). So a run starts with one window and adds windows
while the process has CPU to spare, the way TCP's slow start probes a link: the signal is
the process's CPU seconds per wall second over a short sample, a quantity no upstream can
fake and that needs no tuning per connector.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: wall seconds per utilisation sample; short, so a latency-bound range reaches its
#: ceiling within a second
SAMPLE_SECONDS = 0.25
#: below this many CPU seconds per wall second the process mostly waits: add windows
GROW_BELOW = 0.7
#: above it the process is saturated: let one window go (finish) without replacing it
SHRINK_ABOVE = 0.95
#: busy samples in a row before a run is CPU-bound (and worth a worker process): a single
#: busy sample is often the run's own start (plans, clients, Dagster), not its windows
CPU_BOUND_SAMPLES = 2


class WindowsInFlight:
    """The number of windows a run may have in flight now, between 1 and `ceiling`.

    `target()` is called whenever the run could start a window; it re-samples the
    process's CPU use once per `sample_seconds` and doubles the target while the process is
    mostly idle (a latency-bound upstream reaches 4 in two samples), lowers it by one while
    the process is saturated, and holds it in between. Lowering never stops a window in
    flight: the run just starts no new one until fewer are in flight. The clocks are
    injectable so the policy is tested without timing.
    """

    def __init__(self, ceiling: int, *, sample_seconds: float = SAMPLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {ceiling}")
        self.ceiling = ceiling
        self.sample_seconds = sample_seconds
        self._clock, self._cpu = clock, cpu
        self._target = 1
        self._busy_samples = 0  # in a row, up to the last one
        self._at, self._used = clock(), cpu()

    def seconds_to_next_sample(self) -> float | None:
        """How long a caller waiting on its workers may sleep before `target` has news
        (None: never, the ceiling is one)."""
        if self.ceiling == 1:
            return None
        return max(0.0, self._at + self.sample_seconds - self._clock())

    def cpu_bound(self) -> bool:
        """Whether the last `CPU_BOUND_SAMPLES` samples found the process busy: more
        windows on threads would not help, more in other processes would
        (`runtime/workers.py`)."""
        self.target()  # takes a sample when one is due
        return self._busy_samples >= CPU_BOUND_SAMPLES

    def target(self) -> int:
        now = self._clock()
        elapsed = now - self._at
        if elapsed < self.sample_seconds or self.ceiling == 1:
            return self._target
        used = self._cpu()
        busy = (used - self._used) / elapsed
        self._at, self._used = now, used
        self._busy_samples = self._busy_samples + 1 if busy >= GROW_BELOW else 0
        if busy < GROW_BELOW:
            self._target = min(self.ceiling, self._target * 2)
        elif busy > SHRINK_ABOVE:
            self._target = max(1, self._target - 1)
        return self._target
