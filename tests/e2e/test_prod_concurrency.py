"""Two overlapping range runs of one connector against one instance respect the upstream.

The profile's request budget (maxRequestsPerMinute + burst) is a token bucket per process,
so two processes fetching one upstream at once would send twice the rate. The connector's
Dagster pool (limit 1 from the shipped dagster_home/dagster.yaml) lets only one of them
fetch at a time. Two `dagster asset materialize` processes over different partition ranges
are started; the sandbox's arrival times must stay within the budget in every window, and
the two runs' fetching steps must not overlap. With the pool raised to 2 (the control) the
two runs fetch at the same time, which shows the pool, not timing, keeps them apart.

Contention is made certain, never likely: the sandbox holds the first run's request until
what the test waits for has happened (the second run's step blocked by the pool; in the
control, a request of the second run in flight too), however slowly a loaded machine
starts the second process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance

from chartly_dagster.sandbox import Fault, Sandbox
from tests.support.paths import REPO
from tests.support.secrets import SECRET_ENV

ORDERS = "tenant-demo/proj-sales/orders"
POOL = "tenant-demo/proj-sales/orders"  # ConnectorProfileTranslator.get_pool
STEP = "tenant_demo__proj_sales__orders"
RATE_PER_MINUTE, BURST = 240, 2  # 4 requests/s: twice that shows within a second
RANGES = ("2026-01-01...2026-01-03", "2026-01-11...2026-01-13")
SECOND_RANGE_FROM = int(datetime(2026, 1, 11, tzinfo=UTC).timestamp())
#: how long a condition the test waits for may take on a loaded machine before it fails
WAIT_S = 240
DEFS = """\
from chartly_dagster.integration import build_definitions

defs = build_definitions({profiles!r}, env="dev", schedules=False)
"""


def budget_violations(times: list[float], rate_per_minute: int, burst: int,
                      slack_s: float = 0.05) -> list[tuple[int, float]]:
    """Windows [t_i, t_j] holding more requests than a token bucket allows in their length.

    A bucket of `burst` tokens refilled at `rate` per second admits at most
    burst + rate * T requests in any window of length T; `slack_s` absorbs the jitter
    between sending and arrival. Returns (count, window length) of each violating window.
    """
    rate = rate_per_minute / 60
    ts = sorted(times)
    out = []
    for i in range(len(ts)):
        for j in range(i + 1, len(ts)):
            count, span = j - i + 1, ts[j] - ts[i]
            if count > burst + rate * (span + slack_s):
                out.append((count, round(span, 3)))
    return out


def test_budget_violations_detects_a_double_rate() -> None:
    steady = [i / 2 for i in range(10)]  # 2/s: exactly the budget of 120/min
    assert budget_violations(steady, 120, 2) == []
    doubled = sorted(steady + [t + 0.01 for t in steady])
    assert budget_violations(doubled, 120, 2)


@dataclass(frozen=True)
class StepSpan:
    run_id: str
    start: float
    end: float


def _pool_waits(instance: DagsterInstance) -> list[str]:
    """The engine messages of every run saying a step waits for a pool."""
    waits = []
    for run in instance.get_run_records():
        for record in instance.get_records_for_run(
                run.dagster_run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            message = record.event_log_entry.user_message
            if "pool" in message and "block" in message:
                waits.append(message)
    return waits


def _fetch_step_spans(instance: DagsterInstance) -> list[StepSpan]:
    """Start and end of the connector asset's step in every run, from the event log."""
    spans = []
    for run in instance.get_run_records():
        run_id = run.dagster_run.run_id
        records = instance.get_records_for_run(run_id, of_type={
            DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}).records
        found = {r.event_log_entry.dagster_event_type: r.event_log_entry.timestamp
                 for r in records if r.event_log_entry.step_key == STEP}
        spans.append(StepSpan(run_id, found[DagsterEventType.STEP_START],
                              found[DagsterEventType.STEP_SUCCESS]))
    return sorted(spans, key=lambda s: s.start)


def _ranges_in_flight(sandbox: Sandbox) -> set[bool]:
    """Which ranges (second range: True) have sent a request so far."""
    return {int(q["from"]) >= SECOND_RANGE_FROM
            for _, path, q in sandbox.request_log if path == "/v2/orders"}


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT_S}s waiting for {what}")
        time.sleep(0.1)


def _slow_profiles(profiles: Path) -> None:
    """Orders at 240 requests/min with a burst of 2, 8 pages per day: 24 requests a run."""
    path = profiles / "sales" / "orders.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["spec"]["rateLimit"] = {"maxRequestsPerMinute": RATE_PER_MINUTE, "burst": BURST}
    doc["spec"]["pagination"]["pageSize"] = 200
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _run_two_ranges(home: Path, defs_file: Path, sandbox: Sandbox,
                    contended: Callable[[], bool], what: str
                    ) -> list[subprocess.CompletedProcess]:
    """Run both ranges so that they certainly contend.

    The sandbox holds every request until `contended()` holds: the first run is started and
    stays mid-request, holding its pool slot, while the second one starts; then the holds
    are released and both runs finish. A machine however loaded only makes this slower.
    """
    env = {**os.environ, **SECRET_ENV, "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).with_name("dagster")
    hold = sandbox.faults.add(Fault("hold", endpoint="/v2/orders", times=None))
    procs: list[subprocess.Popen[str]] = []
    # Output goes to files: a held process must never also block on a full pipe.
    logs = [home / f"run-{i}.log" for i in range(len(RANGES))]
    try:
        for rng, log in zip(RANGES, logs, strict=True):
            with log.open("w", encoding="utf-8") as out:
                procs.append(subprocess.Popen(
                    [str(dagster), "asset", "materialize", "-f", str(defs_file),
                     "--select", ORDERS, "--partition-range", rng],
                    env=env, stdout=out, stderr=subprocess.STDOUT, text=True))
            if len(procs) == 1:
                _wait_for(lambda: sandbox.request_count("/v2/orders") > 0,
                          "the first run's first request")
        _wait_for(contended, what)
        hold.release()
        for proc in procs:
            proc.wait(timeout=WAIT_S)
        return [subprocess.CompletedProcess(proc.args, proc.returncode,
                                            log.read_text(encoding="utf-8"))
                for proc, log in zip(procs, logs, strict=True)]
    finally:
        hold.release()
        for proc in procs:  # only after a timeout or an error: never leave a run behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("pool_limit", [1, 2], ids=["pool-limit-1", "pool-limit-2-control"])
def test_overlapping_range_runs_respect_the_upstream_rate(
        pool_limit: int, sandbox: Sandbox, sandbox_profiles: Path, secrets_env: dict,
        tmp_path: Path) -> None:
    _slow_profiles(sandbox_profiles)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    defs_file = tmp_path / "defs.py"
    defs_file.write_text(DEFS.format(profiles=str(sandbox_profiles)), encoding="utf-8")
    # Create the SQLite storage once, as `dagster dev` would: two processes initializing
    # a fresh SQLite instance at the same moment race on its schema version table.
    with DagsterInstance.from_config(str(home)) as instance:
        if pool_limit != 1:  # the control: as if someone raised the pool above what is safe
            instance.event_log_storage.set_concurrency_slots(POOL, pool_limit)
        if pool_limit == 1:
            # The first run is held mid-request (its slot taken) until the second run's
            # step has been refused a slot: the pool was tested, for certain.
            contended, what = (lambda: bool(_pool_waits(instance)),
                               "the second run's step to wait for the pool")
        else:
            # Held until the second run has a request in flight too: both fetch at once.
            contended, what = (lambda: _ranges_in_flight(sandbox) == {False, True},
                               "both runs to have a request in flight")
        started = time.monotonic()
        results = _run_two_ranges(home, defs_file, sandbox, contended, what)
        elapsed = time.monotonic() - started
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:]

    times = sandbox.request_times("/v2/orders")
    windows = [int(q["from"]) for _, path, q in sandbox.request_log if path == "/v2/orders"]
    assert len(times) == len(windows) >= 20, len(times)  # both runs fetched, 12 pages each
    order = [w >= SECOND_RANGE_FROM for w in windows]
    assert sum(order) >= 10 and order.count(False) >= 10, order  # each range's own pages
    violations = budget_violations(times, RATE_PER_MINUTE, BURST)
    with DagsterInstance.from_config(str(home)) as instance:
        spans = _fetch_step_spans(instance)
        waits = _pool_waits(instance)
    assert len(spans) == 2, spans
    overlap = spans[0].end > spans[1].start
    switch = next(i for i, v in enumerate(order) if v != order[0])
    print(f"pool limit {pool_limit}: {len(times)} requests in {elapsed:.1f}s; handoff gap "
          f"{times[switch] - times[switch - 1]:.2f}s; steps {spans[1].start - spans[0].end:.2f}s "
          f"apart; violations {violations[:3]}")
    if pool_limit == 1:
        assert waits, "no step waited for the connector's pool"
        assert not violations, violations[:5]
        assert not overlap, spans
        # one range's requests all came before the other's
        assert order == sorted(order) or order == sorted(order, reverse=True), order
    else:
        # Both steps ran at once (each had a request in flight), and the upstream saw the
        # two ranges interleaved: what the pool of the limit-1 case prevents.
        assert overlap, spans
        assert order != sorted(order) and order != sorted(order, reverse=True), order
