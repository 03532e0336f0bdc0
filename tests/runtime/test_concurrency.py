"""Windows in flight: the policy that adds windows while the process has CPU to spare,
driven by injected wall and CPU clocks (never by timing)."""

from __future__ import annotations

import pytest

from chartly_dagster.runtime.concurrency import SAMPLE_SECONDS, WindowsInFlight


class Clocks:
    """A wall clock and a process CPU clock the test advances together."""

    def __init__(self) -> None:
        self.wall, self.cpu = 100.0, 5.0

    def run(self, seconds: float, busy: float) -> None:
        """`seconds` of wall time during which the process used `busy` CPU s per s."""
        self.wall += seconds
        self.cpu += seconds * busy


def _policy(ceiling: int, clocks: Clocks) -> WindowsInFlight:
    return WindowsInFlight(ceiling, clock=lambda: clocks.wall, cpu=lambda: clocks.cpu)


def test_a_run_starts_with_one_window_and_holds_it_between_samples() -> None:
    clocks = Clocks()
    policy = _policy(4, clocks)
    assert policy.target() == 1
    clocks.run(SAMPLE_SECONDS / 2, busy=0.0)  # idle, but not a whole sample yet
    assert policy.target() == 1
    assert policy.seconds_to_next_sample() == pytest.approx(SAMPLE_SECONDS / 2)


def test_a_waiting_process_doubles_its_windows_up_to_the_ceiling() -> None:
    clocks = Clocks()
    policy = _policy(4, clocks)
    seen = []
    for _ in range(4):  # latency-bound: the process mostly waits on the upstream
        clocks.run(SAMPLE_SECONDS, busy=0.1)
        seen.append(policy.target())
    assert seen == [2, 4, 4, 4]
    odd = _policy(3, clocks)
    clocks.run(SAMPLE_SECONDS, busy=0.1)
    odd.target()
    clocks.run(SAMPLE_SECONDS, busy=0.1)
    assert odd.target() == 3  # never beyond the ceiling


def test_a_saturated_process_keeps_one_window() -> None:
    clocks = Clocks()
    policy = _policy(4, clocks)
    for busy in (1.0, 0.98, 0.8, 1.1):  # CPU-bound (a fast upstream): more would contend
        clocks.run(SAMPLE_SECONDS, busy=busy)
        assert policy.target() == 1


def test_windows_are_let_go_one_by_one_when_the_process_saturates() -> None:
    clocks = Clocks()
    policy = _policy(4, clocks)
    for _ in range(2):
        clocks.run(SAMPLE_SECONDS, busy=0.2)
        policy.target()
    seen = []
    for busy in (1.0, 0.85, 1.0, 1.0, 1.0):  # saturated, then in between (held), then again
        clocks.run(SAMPLE_SECONDS, busy=busy)
        seen.append(policy.target())
    assert seen == [3, 3, 2, 1, 1]


def test_a_ceiling_of_one_never_samples() -> None:
    clocks = Clocks()
    policy = _policy(1, clocks)
    clocks.run(10 * SAMPLE_SECONDS, busy=0.0)
    assert policy.target() == 1
    assert policy.seconds_to_next_sample() is None
    with pytest.raises(ValueError, match="ceiling"):
        _policy(0, clocks)


def test_a_process_busy_over_two_samples_is_cpu_bound_until_one_finds_it_waiting() -> None:
    """What hands windows to worker processes: a process busy over two whole samples in a
    row (one busy sample is often the run's own start)."""
    clocks = Clocks()
    policy = _policy(4, clocks)
    assert not policy.cpu_bound()  # no sample yet
    clocks.run(SAMPLE_SECONDS, busy=0.9)
    assert not policy.cpu_bound()  # one busy sample
    clocks.run(SAMPLE_SECONDS, busy=0.0)
    assert not policy.cpu_bound()  # a waiting sample breaks the streak
    clocks.run(SAMPLE_SECONDS, busy=0.9)
    assert not policy.cpu_bound()  # one busy sample again
    clocks.run(SAMPLE_SECONDS, busy=0.9)
    assert policy.cpu_bound()
    clocks.run(SAMPLE_SECONDS / 2, busy=0.0)  # mid-sample: the last verdict holds
    assert policy.cpu_bound()
    clocks.run(SAMPLE_SECONDS, busy=0.2)
    assert not policy.cpu_bound()
