"""Recording benchmark: what recording a window costs, and how fast a recording replays.

The same 1,000,000-record window as `bench/run.py` (1,000-record pages, cursor pagination,
sandbox in its own process) is fetched live without and with recording, then replayed
from the recording with no network. Each pipeline runs in a fresh process, so its peak
RSS is its own. Prints one table: seconds, records/s, time vs the live fetch, CPU seconds
of the whole process (steadier than wall time on a shared machine), peak RSS, and bytes
on disk (the Parquet file, the recording).

    .venv/bin/python bench/recording.py [--records N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import EVENTS_PER_SECOND, bench_window
from sandbox_process import sandbox_process

PIPELINES = {"live": "live fetch (no recording)",
             "record": "live fetch + recording (gzip bodies, content-addressed)",
             "replay": "replay from the recording (no network)"}


def worker(name: str, port: int, records: int, page: int, out: Path,
           recordings: Path) -> dict[str, float]:
    from chartly_dagster.core.plan import build_plan
    from chartly_dagster.runtime.executor import NetworkOptions, WindowTarget, fetch_window
    from chartly_dagster.runtime.recording import RecordTo, ReplayFrom
    from chartly_dagster.runtime.storage import Storage

    resolved, window = bench_window(out, port, records, page)
    recording = {"live": None, "record": RecordTo(Storage.parse(str(recordings))),
                 "replay": ReplayFrom(str(recordings))}[name]
    began = time.perf_counter()
    result = fetch_window(resolved, window, build_plan(resolved, window),
                          target=WindowTarget.at(str(out / "data")),
                          network=NetworkOptions("dev", recording=recording))
    seconds = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"records": result.records, "seconds": seconds, "file_bytes": result.file_bytes,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "recording_bytes": result.recorded.bytes if result.recorded else 0,
            "content_hash": result.content_hash,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(name: str, port: int, records: int, page: int,
               recordings: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--port", str(port), "--records",
             str(records), "--page", str(page), "--out", tmp, "--recordings", str(recordings)],
            capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per pipeline (median)")
    parser.add_argument("--worker", choices=sorted(PIPELINES))
    parser.add_argument("--port", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--recordings", type=Path)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.port, args.records, args.page, args.out,
                                args.recordings)))
        return 0

    recordings = Path(tempfile.mkdtemp(prefix="chartly-bench-recordings-"))
    try:
        with sandbox_process(EVENTS_PER_SECOND * 3600) as (_, port):
            results: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
            for _ in range(args.repeat):  # interleaved, so drift hits every pipeline alike
                for name in PIPELINES:  # each replay reads the recording made just before
                    results[name].append(run_worker(name, port, args.records, args.page,
                                                    recordings))
    finally:
        shutil.rmtree(recordings, ignore_errors=True)

    hashes = {r["content_hash"] for runs in results.values() for r in runs}
    live = statistics.median(r["seconds"] for r in results["live"])
    print(f"\n{args.records:,}-record window, {args.page}-record pages, cursor pagination, "
          f"sandbox on loopback, median of {args.repeat}; one content hash across all runs: "
          f"{len(hashes) == 1}\n")
    print("| pipeline | seconds | records/s | time vs live | CPU seconds | peak RSS | "
          "Parquet file | recording |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label in PIPELINES.items():
        runs = results[name]
        seconds = statistics.median(r["seconds"] for r in runs)
        recorded = int(runs[0]["recording_bytes"])
        parquet = int(runs[0]["file_bytes"])
        ratio = f" ({recorded / parquet:.2f}x the file)" if name == "record" else ""
        print(f"| {label} | {seconds:.2f} | {runs[0]['records'] / seconds:,.0f} | "
              f"{seconds / live:.2f}x | "
              f"{statistics.median(r['cpu_seconds'] for r in runs):.2f} | "
              f"{max(r['rss_mb'] for r in runs):.0f} MB | "
              f"{parquet / 1e6:.1f} MB | "
              f"{(str(round(recorded / 1e6, 1)) + ' MB' + ratio) if recorded else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
