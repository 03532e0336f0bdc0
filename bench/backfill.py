"""Backfill benchmark: the Dagster asset against the bare floor and `fetch_window`.

Three tables, each with ratios measured in the same run (issue 9 item 7):

  (a) one ~1,000,000-record daily window: bare httpx + orjson + pyarrow loop, `fetch_window`,
      the asset materialized through Dagster (SQLite instance on disk, all blocking checks);
  (b) a 30-window range of the same total size: the bare floor window after window,
      `fetch_window` window after window, the asset as one single-run range;
  (c) the same 30 windows, smaller, against a sandbox that answers each page after a fixed
      latency, under a rate limit: the asset as one run with 1 and with 4 windows in flight,
      and the request rate the sandbox saw;
  (d) three such connectors of one project, each under its own rate limit, the range as one
      run of the project job launched with `dagster job execute`: steps side by side (the
      default executor) and one after another (in process).

Every pipeline runs in a fresh process of its own; its seconds are its wall time from start
to finish, imports included, "CPU s" its user + system CPU time with that of its worker
processes (steadier than wall time on a shared machine), and its peak RSS and PSS the
largest sums over the process and every process under it, sampled every 50 ms from outside
(a range may fetch windows in worker processes, `runtime/workers.py`). The windows
in flight are set on the profile (`partitions.maxConcurrentWindows`) and the resource
(`ChartlyResource.max_concurrent_windows`) when this build has those settings; a build
without them says so in table (c) instead of pretending. They are a ceiling: a run adds
windows while its process has CPU to spare (`runtime/concurrency.py`), so on loopback,
where one window keeps the process busy, (a) and (b) mostly run one at a time.

    make bench     # or: .venv/bin/python bench/backfill.py [--records N] [--section a,b,c,d]
                   #     [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from run import PROFILE, worker_baseline
from sandbox_process import sandbox_process

DAY = timedelta(days=1)
FIRST_DAY = datetime(2026, 2, 1, tzinfo=UTC)
RANGE_DAYS = 30
PAGE = 1000
#: table (c): a small range whose time is all latency, and the limit it must respect
LATENCY_MS = 50
LATENCY_EVENTS_PER_HOUR = 100  # 2,400 records a day: 12 pages of 200
LATENCY_PAGE = 200
LATENCY_RATE_PER_MINUTE = 4800  # 80 requests/s: 4 windows of 50 ms pages fit just under it
LATENCY_BURST = 4
#: table (d): three connectors of one project, each under its own upstream's rate limit
PROJECT_CONNECTORS = ("bench-a", "bench-b", "bench-c")
PROJECT_JOB = "bench__ingest"
PROJECT_RATE_PER_MINUTE = 1200  # 20 requests/s per connector
#: runs per row of tables (a) and (b) (`--repeat`); the median run is shown
REPEAT = 1


def _day(offset: int) -> datetime:
    return FIRST_DAY + offset * DAY


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _profile_folder(out: Path, port: int, *, page: int, rate_per_minute: int | None = None,
                    burst: int | None = None, windows_in_flight: int | None = None,
                    name: str = "bench-events") -> Path:
    """The bench profile of bench/run.py as connector `name`, with this run's page size,
    rate limit and (when this build knows the setting) windows in flight."""
    doc = yaml.safe_load(PROFILE.format(port=port, page=page))
    doc["metadata"]["name"] = name
    if rate_per_minute is not None:
        doc["spec"]["rateLimit"] = {"maxRequestsPerMinute": rate_per_minute, "burst": burst}
    if windows_in_flight is not None and _profile_has_windows_in_flight():
        doc["spec"]["partitions"]["maxConcurrentWindows"] = windows_in_flight
    folder = out / "profiles"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                         encoding="utf-8")
    return folder


def _profile_has_windows_in_flight() -> bool:
    from chartly_dagster.core.profile import PartitionsSpec

    return "max_concurrent_windows" in PartitionsSpec.model_fields


def _resource_has_windows_in_flight() -> bool:
    from chartly_dagster.integration import ChartlyResource

    return "max_concurrent_windows" in ChartlyResource.model_fields


def _resolved(folder: Path) -> Any:
    from chartly_dagster.core.catalog import ProfileCatalog

    catalog = ProfileCatalog.load(folder)
    catalog.raise_for_issues()
    return catalog.resolve_all()[0]


# -- workers (each in its own process) ----------------------------------------------------

def worker_floor(port: int, days: int, out: Path, **_: Any) -> dict[str, Any]:
    """The bare floor, window after window (bench/run.py's loop, one file per window)."""
    total = 0
    for i in range(days):
        folder = out / f"w{i}"
        folder.mkdir()
        total += worker_baseline(port, 0, PAGE, folder, since=_iso(_day(i)),
                                 until=_iso(_day(i + 1)))
    return {"records": total}


def worker_fetch_window(port: int, days: int, out: Path, **_: Any) -> dict[str, Any]:
    """`fetch_window`, window after window, staging every page as the assets do."""
    from chartly_dagster.core.plan import build_plan
    from chartly_dagster.core.windows import Window
    from chartly_dagster.runtime.executor import NetworkOptions, WindowTarget, fetch_window

    resolved = _resolved(_profile_folder(out, port, page=PAGE))
    total = 0
    for i in range(days):
        window = Window.parse(_iso(_day(i)), _iso(_day(i + 1)))
        result = fetch_window(resolved, window, build_plan(resolved, window),
                              target=WindowTarget.at(str(out / "data"), resumable=True,
                                                     partition=_day(i).date().isoformat()),
                              network=NetworkOptions("dev"), on_progress=lambda event: None)
        total += result.records
    return {"records": total}


def worker_dagster(port: int, days: int, out: Path, *, page: int = PAGE,
                   rate_per_minute: int | None = None, burst: int | None = None,
                   windows_in_flight: int | None = None, lean: bool = False,
                   checks: bool = True) -> dict[str, Any]:
    """The asset through Dagster: one partition with `materialize`, or a range as one run of
    the project's job; every blocking check runs and must pass.

    `lean` is the same work `fetch_window` does plus the connector's own checks: no typed
    table and no recording (which the `deterministic` check would re-derive). Otherwise
    everything the dev env turns on by default runs too. `checks=False` materializes the
    connector asset alone (the range still as one run), which isolates what Dagster itself
    adds to `fetch_window`.
    """
    from dagster import AssetRecordsFilter, DagsterInstance, materialize

    from chartly_dagster.integration import (
        ChartlyResource,
        PartitionMetadata,
        build_definitions,
    )
    from chartly_dagster.integration._compat import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    folder = _profile_folder(out, port, page=page, rate_per_minute=rate_per_minute,
                             burst=burst, windows_in_flight=windows_in_flight)
    config: dict[str, Any] = {"env": "dev", "storage": {"root": str(out / "data")}}
    if lean:
        config["storage"]["record_responses"] = False
    if windows_in_flight is not None and _resource_has_windows_in_flight():
        config["max_concurrent_windows"] = windows_in_flight
    chartly = ChartlyResource(**config)
    defs = build_definitions(folder, resource=chartly, schedules=False, typed=not lean)
    home = out / "home"  # made by `run_worker`, as a deployment's instance already exists
    keys = [_day(i).date().isoformat() for i in range(days)]
    with DagsterInstance.from_config(str(home)) as instance:
        if not checks:
            range_tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0],
                          ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
            result = materialize(list(defs.assets), instance=instance,
                                 resources=defs.resources, raise_on_error=False,
                                 **({"partition_key": keys[0]} if days == 1
                                    else {"tags": range_tags}))
        elif days == 1:
            result = materialize([*defs.assets, *defs.asset_checks], instance=instance,
                                 partition_key=keys[0], resources=defs.resources,
                                 raise_on_error=False)
        else:
            (job_name,) = [j.name for j in defs.jobs]
            result = defs.resolve_job_def(job_name).execute_in_process(
                instance=instance, raise_on_error=False,
                tags={ASSET_PARTITION_RANGE_START_TAG: keys[0],
                      ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
        if not result.success:
            raise SystemExit("the Dagster run failed")
        key = next(iter(defs.assets)).key
        evaluations = [e.event_specific_data for e in result.all_events
                       if e.event_type_value == "ASSET_CHECK_EVALUATION"
                       and e.event_specific_data.partition is None]
        records = 0
        for pk in keys:
            row = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1).records[0]
            records += PartitionMetadata.extract(row.asset_materialization.metadata).records
        said = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))
    effective = config.get("max_concurrent_windows")
    data: dict[str, Any] = {"records": records, "windows_in_flight": effective,
                            "in_flight": _most_in_flight(said)}
    if checks:
        data.update(checks_passed=sum(c.passed for c in evaluations), checks=len(evaluations))
    return data


def worker_project(port: int, days: int, out: Path, *, side_by_side: bool = True,
                   **_: Any) -> dict[str, Any]:
    """Three rate-limited connectors of one project, the range as one run of the project's
    job, launched as a user would (`dagster job execute` on a code location file) with the
    default executor or with every step in the run worker's process."""
    for name in PROJECT_CONNECTORS:
        folder = _profile_folder(out, port, page=LATENCY_PAGE, name=name, burst=LATENCY_BURST,
                                 rate_per_minute=PROJECT_RATE_PER_MINUTE)
    executor = "" if side_by_side else ", executor=in_process_executor"
    code = out / "defs.py"
    code.write_text(
        "from dagster import in_process_executor\n"
        "from chartly_dagster.integration import (ChartlyResource, StorageConfig,\n"
        "                                         build_definitions)\n"
        f"defs = build_definitions({str(folder)!r}, schedules=False{executor}, resource="
        f"ChartlyResource(env='dev', storage=StorageConfig(root={str(out / 'data')!r})))\n",
        encoding="utf-8")
    home = out / "home"  # made by `run_worker`
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(home)
    tags = {"dagster/asset_partition_range_start": _day(0).date().isoformat(),
            "dagster/asset_partition_range_end": _day(days - 1).date().isoformat()}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "job", "execute", "-f", str(code),
         "-j", PROJECT_JOB, "--tags", json.dumps(tags)],
        env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the project run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"records": 0, "largest_process_mb": children}


def _most_in_flight(said: str) -> str:
    """"K (P)": the most windows the run had in flight at once, P of them in worker
    processes, as the step logged them (one window logs nothing)."""
    found = re.search(r"at most (\d+) window\(s\) were in flight at once"
                      r"(?:, at most (\d+) in worker processes)?", said)
    if found is None:
        return "1"
    return found.group(1) + (f" ({found.group(2)})" if found.group(2) else "")


WORKERS = {"floor": worker_floor, "fetch_window": worker_fetch_window,
           "dagster": worker_dagster, "project": worker_project}


def _instance_home(home: Path) -> None:
    """A Dagster instance whose storage exists, as a deployment's does before any run:
    creating the SQLite schema (~0.9 s) is set-up, not part of a run."""
    from dagster import DagsterInstance

    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    with DagsterInstance.from_config(str(home)):
        pass


class _TreeMemory:
    """The peaks of the summed RSS and of the summed PSS of a pipeline's process and its
    descendants (ru_maxrss would only give the largest single process). PSS splits a shared
    page between the processes mapping it (the Arrow and Python libraries a worker process
    maps too), so its sum is the memory the tree uses; the RSS sum counts those pages once
    per process. Sampled from the bench's own process, every 50 ms: reading a process's
    smaps costs that process system time, which a sampler inside it would add to its CPU
    seconds (and to the CPU use `runtime/concurrency.py` watches)."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        import threading

        self.peak = self.peak_pss = 0
        self._root = root
        self._done = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _children(pid: int) -> list[int]:
        out: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return out

    def _sample(self) -> tuple[int, int]:
        rss = pss = 0
        todo = [self._root]
        while todo:
            pid = todo.pop()
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
            except OSError:
                continue
            todo += self._children(pid)
        return rss, pss

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            rss, pss = self._sample()
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)

    def stop(self) -> tuple[float, float]:
        """The peaks in MB: summed RSS, summed PSS."""
        self._done.set()
        self._thread.join()
        return self.peak / 2**20, self.peak_pss / 2**20


def run_median(name: str, port: int, days: int, **options: Any) -> dict[str, Any]:
    """`run_worker` REPEAT times; the run with the median seconds."""
    runs = sorted((run_worker(name, port, days, **options) for _ in range(REPEAT)),
                  key=lambda data: data["seconds"])
    return runs[len(runs) // 2]


def run_worker(name: str, port: int, days: int, **options: Any) -> dict[str, Any]:
    """One pipeline in a fresh process: its result, wall seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        if name in ("dagster", "project"):
            _instance_home(Path(tmp) / "home")
        with subprocess.Popen(
                [sys.executable, __file__, "--worker", name, "--port", str(port),
                 "--days", str(days), "--out", tmp, "--options", json.dumps(options)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            memory = _TreeMemory(proc.pid)
            stdout, stderr = proc.communicate()
            rss, pss = memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{stdout[-1000:]}\n{stderr[-3000:]}")
    data = json.loads(stdout.strip().splitlines()[-1])
    data["rss_mb"] = max(rss, data["rss_mb"])  # a run shorter than a sample: its own peak
    data["pss_mb"] = pss
    return data


# -- tables --------------------------------------------------------------------------------

def _row(label: str, data: dict[str, Any], base: float, core: float) -> str:
    checks = (f"{data['checks_passed']}/{data['checks']} passed" if "checks" in data
              else "-")
    return (f"| {label} | {data['records']:,} | {data['seconds']:.2f} | "
            f"{data['records'] / data['seconds']:,.0f} | {data['seconds'] / base:.2f}x | "
            f"{data['seconds'] / core:.2f}x | {data['cpu_s']:.2f} | {checks} | "
            f"{data.get('in_flight', '-')} | {data['rss_mb']:.0f} MB | "
            f"{data['pss_mb']:.0f} MB |")


def _table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Rows: the bare floor first, `fetch_window` second, then the Dagster paths."""
    base, core = rows[0][1]["seconds"], rows[1][1]["seconds"]
    print(f"\n{title}\n")
    print("| path | records | seconds | records/s | time vs bare floor | time vs "
          "`fetch_window` | CPU s | checks | most in flight (in processes) | peak RSS "
          "(summed) | peak PSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, data in rows:
        print(_row(label, data, base, core))


def section_a(records: int) -> None:
    per_hour = -(-records // 24)
    with sandbox_process(per_hour) as (_, port):
        rows = [("bare floor (httpx + orjson + pyarrow)", run_median("floor", port, 1)),
                ("`fetch_window`, pages staged", run_median("fetch_window", port, 1)),
                ("the asset alone through Dagster", run_median("dagster", port, 1, lean=True,
                                                                checks=False)),
                ("the asset through Dagster + its 3 checks", run_median("dagster", port, 1,
                                                                        lean=True)),
                ("dev defaults: + typed table, drift check, recording re-derived",
                 run_median("dagster", port, 1))]
    _table(f"(a) one daily window of {rows[0][1]['records']:,} records, {PAGE}-record "
           "pages, cursor pagination, sandbox process on loopback", rows)


def section_b(records: int) -> None:
    per_hour = -(-records // (24 * RANGE_DAYS))
    with sandbox_process(per_hour) as (_, port):
        rows = [("bare floor, window after window", run_median("floor", port, RANGE_DAYS)),
                ("`fetch_window`, window after window",
                 run_median("fetch_window", port, RANGE_DAYS)),
                ("the asset alone, the range as one Dagster run",
                 run_median("dagster", port, RANGE_DAYS, lean=True, checks=False)),
                ("the asset, the range as one Dagster run + its 3 checks",
                 run_median("dagster", port, RANGE_DAYS, lean=True)),
                ("dev defaults: + typed table, drift check, recording re-derived",
                 run_median("dagster", port, RANGE_DAYS))]
    _table(f"(b) {RANGE_DAYS} daily windows, {rows[0][1]['records']:,} records in all, "
           f"{PAGE}-record pages", rows)


def _rates(times: list[float]) -> tuple[float, float, int]:
    """(seconds from first to last request, mean requests/s over them, most requests in any
    one-second span), as the sandbox saw them."""
    ts = sorted(times)
    span = ts[-1] - ts[0] if len(ts) > 1 else 0.0
    mean = (len(ts) - 1) / span if span else 0.0
    peak, j = 0, 0
    for i, t in enumerate(ts):
        while ts[j] < t - 1.0:
            j += 1
        peak = max(peak, i - j + 1)
    return span, mean, peak


def section_c() -> None:
    from chartly_dagster.sandbox import Fault, SandboxConfig, run_sandbox

    supported = _profile_has_windows_in_flight() or _resource_has_windows_in_flight()
    limit_per_s = LATENCY_RATE_PER_MINUTE / 60
    rows = []
    with run_sandbox(SandboxConfig(events_per_hour=LATENCY_EVENTS_PER_HOUR)) as sandbox:
        for windows in (1, 4):
            if windows > 1 and not supported:
                rows.append(f"| {windows} | n/a: this build has no windows-in-flight "
                            "setting | | | | | | | | |")
                continue
            sandbox.clear_requests()
            sandbox.faults.clear()
            sandbox.faults.add(Fault("slow", endpoint="/v1/events", times=None,
                                     delay_ms=LATENCY_MS))
            data = run_worker("dagster", sandbox.port, RANGE_DAYS, page=LATENCY_PAGE,
                              rate_per_minute=LATENCY_RATE_PER_MINUTE, burst=LATENCY_BURST,
                              windows_in_flight=windows)
            span, mean, peak = _rates(sandbox.request_times("/v1/events"))
            rows.append((windows, data, sandbox.request_count("/v1/events"), span, mean, peak))
    first = next(r for r in rows if isinstance(r, tuple))
    base, base_span = first[1]["seconds"], first[3]
    print(f"\n(c) the {RANGE_DAYS}-window range as one Dagster run, {LATENCY_PAGE}-record "
          f"pages each answered after {LATENCY_MS} ms, rate limit "
          f"{LATENCY_RATE_PER_MINUTE}/min ({limit_per_s:.0f}/s, burst {LATENCY_BURST})\n")
    print("Run seconds include starting Dagster, loading definitions and the checks; the "
          "fetch span is the sandbox's first to last request.\n")
    print("| windows in flight (ceiling) | records | run seconds | speed-up vs 1 | fetch span s | "
          "fetch speed-up vs 1 | requests | mean requests/s seen | most in any 1 s | "
          "peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if isinstance(row, str):
            print(row)
            continue
        windows, data, requests, span, mean, peak = row
        print(f"| {windows} | {data['records']:,} | {data['seconds']:.2f} | "
              f"{base / data['seconds']:.2f}x | {span:.2f} | {base_span / span:.2f}x | "
              f"{requests} | {mean:.1f} | {peak} (limit {limit_per_s + LATENCY_BURST:.0f}) | "
              f"{data['rss_mb']:.0f} MB |")


def section_d() -> None:
    from chartly_dagster.sandbox import Fault, SandboxConfig, run_sandbox

    rows = []
    with run_sandbox(SandboxConfig(events_per_hour=LATENCY_EVENTS_PER_HOUR)) as sandbox:
        for side_by_side in (False, True):
            sandbox.clear_requests()
            sandbox.faults.clear()
            sandbox.faults.add(Fault("slow", endpoint="/v1/events", times=None,
                                     delay_ms=LATENCY_MS))
            data = run_worker("project", sandbox.port, RANGE_DAYS, side_by_side=side_by_side)
            span, mean, peak = _rates(sandbox.request_times("/v1/events"))
            rows.append((side_by_side, data, sandbox.request_count("/v1/events"), span, mean,
                         peak))
    base, base_span = rows[0][1]["seconds"], rows[0][3]
    limit = PROJECT_RATE_PER_MINUTE / 60
    print(f"\n(d) {len(PROJECT_CONNECTORS)} connectors of one project, {RANGE_DAYS} windows "
          f"each, as one run of the project job (`dagster job execute`), {LATENCY_PAGE}-record "
          f"pages answered after {LATENCY_MS} ms, each connector limited to "
          f"{PROJECT_RATE_PER_MINUTE}/min ({limit:.0f}/s)\n")
    print("| steps run | run seconds | speed-up | fetch span s | requests | mean requests/s "
          "seen (all connectors) | most in any 1 s | largest process |")
    print("|---|---|---|---|---|---|---|---|")
    for side_by_side, data, requests, span, mean, peak in rows:
        label = ("side by side (default: a process per step, forked)" if side_by_side
                 else "one after another (in the run worker's process)")
        print(f"| {label} | {data['seconds']:.2f} | {base / data['seconds']:.2f}x | "
              f"{span:.2f} ({base_span / span:.2f}x) | {requests} | {mean:.1f} | {peak} | "
              f"{data['largest_process_mb']:.0f} MB |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records of the window in (a) and of the range in (b)")
    parser.add_argument("--section", default="a,b,c,d", help="which tables, e.g. a,c")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per row of (a) and (b); the median is shown")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--port", type=int)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args(argv)

    if args.worker:
        began = time.perf_counter()
        data = WORKERS[args.worker](args.port, args.days, args.out, **json.loads(args.options))
        data["seconds"] = time.perf_counter() - began
        data["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data["cpu_s"] = sum(u.ru_utime + u.ru_stime for u in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN)))
        print(json.dumps(data))
        return 0

    global REPEAT
    REPEAT = max(1, args.repeat)
    sections = set(args.section.split(","))
    if "a" in sections:
        section_a(args.records)
    if "b" in sections:
        section_b(args.records)
    if "c" in sections:
        section_c()
    if "d" in sections:
        section_d()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
