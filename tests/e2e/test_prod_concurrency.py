"""Two overlapping range runs of one connector against one instance respect the upstream.

The profile's request budget (maxRequestsPerMinute + burst) is a token bucket per process,
so two processes fetching one upstream at once would send twice the rate. The connector's
Dagster pool (limit 1 from the shipped dagster_home/dagster.yaml) lets only one of them
fetch at a time. Two `dagster asset materialize` processes over different partition ranges
are started together; the sandbox's arrival times must stay within the budget in every
window, and the two runs' fetching steps must not overlap. With the pool raised to 2 the
same scenario exceeds the budget, which shows the assertion can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def _fetch_step_spans(instance: DagsterInstance) -> tuple[list[StepSpan], list[str]]:
    """Start and end of the connector asset's step in every run, from the event log, and
    the engine messages about waiting for a pool."""
    spans, waits = [], []
    for run in instance.get_run_records():
        run_id = run.dagster_run.run_id
        records = instance.get_records_for_run(run_id, of_type={
            DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
            DagsterEventType.ENGINE_EVENT}).records
        found = {}
        for record in records:
            entry = record.event_log_entry
            if entry.dagster_event_type == DagsterEventType.ENGINE_EVENT:
                if "pool" in entry.user_message and "block" in entry.user_message:
                    waits.append(entry.user_message)
            elif entry.step_key == STEP:
                found[entry.dagster_event_type] = entry.timestamp
        spans.append(StepSpan(run_id, found[DagsterEventType.STEP_START],
                              found[DagsterEventType.STEP_SUCCESS]))
    return sorted(spans, key=lambda s: s.start), waits


def _slow_profiles(profiles: Path) -> None:
    """Orders at 240 requests/min with a burst of 2, 8 pages per day: 24 requests a run."""
    path = profiles / "sales" / "orders.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["spec"]["rateLimit"] = {"maxRequestsPerMinute": RATE_PER_MINUTE, "burst": BURST}
    doc["spec"]["pagination"]["pageSize"] = 200
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _run_two_ranges(home: Path, defs_file: Path,
                    sandbox: Sandbox) -> list[subprocess.CompletedProcess]:
    """Start the second run once the first is fetching, so the two always contend.

    Started together, a loaded machine can delay the second process until the first has
    finished, and then no pool is ever tested.
    """
    env = {**os.environ, **SECRET_ENV, "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).with_name("dagster")
    procs: list[subprocess.Popen[str]] = []
    try:
        for rng in RANGES:
            procs.append(subprocess.Popen(
                [str(dagster), "asset", "materialize", "-f", str(defs_file),
                 "--select", ORDERS, "--partition-range", rng],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            deadline = time.monotonic() + 60
            while sandbox.request_count("/v2/orders") == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        outputs = [proc.communicate(timeout=90)[0] for proc in procs]
        return [subprocess.CompletedProcess(proc.args, proc.returncode, output)
                for proc, output in zip(procs, outputs, strict=True)]
    finally:
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
        # The first run's second page answers after 8 s: it holds the pool for certain
        # while the second process starts and reaches its step.
        sandbox.faults.add(Fault("slow", endpoint="/v2/orders", on_request=2, delay_ms=8000))
    started = time.monotonic()
    results = _run_two_ranges(home, defs_file, sandbox)
    elapsed = time.monotonic() - started
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:]

    times = sandbox.request_times("/v2/orders")
    windows = [int(q["from"]) for _, path, q in sandbox.request_log if path == "/v2/orders"]
    assert len(times) == len(windows) >= 20, len(times)  # both runs fetched, 12 pages each
    second_range = int(datetime(2026, 1, 11, tzinfo=UTC).timestamp())
    order = [w >= second_range for w in windows]
    assert sum(order) >= 10 and order.count(False) >= 10, order  # each range's own pages
    violations = budget_violations(times, RATE_PER_MINUTE, BURST)
    with DagsterInstance.from_config(str(home)) as instance:
        spans, waits = _fetch_step_spans(instance)
    assert len(spans) == 2, spans
    overlap = spans[0].end > spans[1].start
    switch = next(i for i, v in enumerate(order) if v != order[0])
    print(f"pool limit {pool_limit}: {len(times)} requests in {elapsed:.1f}s; handoff gap "
          f"{times[switch] - times[switch - 1]:.2f}s; steps {spans[1].start - spans[0].end:.2f}s "
          f"apart; violations {violations[:3]}")
    if pool_limit == 1:
        assert not violations, violations[:5]
        assert not overlap, spans
        # one range's requests all came before the other's, and a step waited for the pool
        assert order == sorted(order) or order == sorted(order, reverse=True), order
        assert waits, "no step waited for the connector's pool"
    else:
        assert overlap and violations, "the control run did not exceed the budget"
