"""Ingest benchmark: the full chartly pipeline vs a bare httpx + orjson + pyarrow loop.

One sandbox process serves a 1,000,000-record window (1,000-record pages, cursor
pagination); each pipeline runs in its own fresh process so peak RSS is its own. Prints
one table: records/s, time ratio to the baseline measured in the same run, peak RSS.

    make bench            # or: .venv/bin/python bench/run.py [--records N] [--repeat R]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sandbox_process import sandbox_process

EVENTS_PER_SECOND = 100
WINDOW_START = "2026-02-01T00:00:00Z"
PROFILE = """\
apiVersion: chartly.io/v1alpha1
kind: Profile
metadata: {{kind: connector, name: bench-events, namespace: bench/ingest, version: 1.0.0}}
spec:
  envs: [dev]
  transport: {{baseUrl: "http://localhost:{port}", maxPayloadBytes: 67108864,
              deadlineMs: 120000, timeoutMs: 60000}}
  egressPolicy: {{dnsAllowlist: [localhost], allowedCidrs: [127.0.0.0/8, "::1/128"],
                 allowedPorts: [{port}]}}
  request: {{path: /v1/events}}
  records: {{path: data.items, idField: id, timeField: occurred_at}}
  window: {{startParam: since, endParam: until}}
  pagination: {{mode: cursor, pageSize: {page}, limitParam: limit, requestParam: cursor,
               responseField: next_cursor}}
  rateLimit: {{maxRequestsPerMinute: 1000000, burst: 100000}}
  limits: {{maxPages: 100000, maxRecords: 100000000}}
  partitions: {{cadence: daily, start: "2026-01-01T00:00:00Z"}}
"""


def _window_end(records: int) -> str:
    from datetime import datetime, timedelta

    start = datetime.fromisoformat(WINDOW_START)
    return (start + timedelta(seconds=records // EVENTS_PER_SECOND)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def worker_baseline(port: int, records: int, page: int, out: Path, *,
                    since: str = WINDOW_START, until: str | None = None) -> int:
    """The bar to beat: bare httpx loop, orjson parse, pyarrow batches, streaming Parquet.

    The window is [since, until), by default the one holding `records` records.
    """
    import httpx
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    params = {"since": since, "until": until or _window_end(records), "limit": str(page)}
    total = 0
    writer = None
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while True:
            body = orjson.loads(client.get("/v1/events", params=params).content)
            items = body["data"]["items"]
            batch = pa.RecordBatch.from_pylist(items)
            if writer is None:
                writer = pq.ParquetWriter(out / "baseline.parquet", batch.schema)
            writer.write_batch(batch)
            total += len(items)
            if not body["next_cursor"]:
                break
            params["cursor"] = body["next_cursor"]
    if writer is not None:
        writer.close()
    return total


def bench_window(out: Path, port: int, records: int, page: int) -> tuple[Any, Any]:
    """The bench profile (written under `out`, pointed at `port`) resolved, and the window
    holding `records` records. The port is part of the plan, so a replay plans the same."""
    from chartly_dagster.core.catalog import ProfileCatalog
    from chartly_dagster.core.windows import Window

    folder = out / "profiles"
    folder.mkdir()
    (folder / "bench.yaml").write_text(PROFILE.format(port=port, page=page))
    catalog = ProfileCatalog.load(folder)
    catalog.raise_for_issues()
    return catalog.resolve_all()[0], Window.parse(WINDOW_START, _window_end(records))


def worker_chartly(port: int, records: int, page: int, out: Path, *,
                   resumable: bool = False) -> int:
    """The product path: guard, envelopes, hashes, checks, one Parquet file.

    `resumable` adds what the Dagster assets do: every page is staged durably and reported
    with its checkpoint, so a failed window can resume after its last page.
    """
    from chartly_dagster.core.plan import build_plan
    from chartly_dagster.runtime.executor import NetworkOptions, WindowTarget, fetch_window

    resolved, window = bench_window(out, port, records, page)
    result = fetch_window(resolved, window, build_plan(resolved, window),
                          target=WindowTarget.at(str(out / "data"), resumable=resumable),
                          network=NetworkOptions("dev"),
                          on_progress=(lambda event: None) if resumable else None)
    return result.records


WORKERS = {"baseline": worker_baseline, "chartly": worker_chartly,
           "chartly-resumable": functools.partial(worker_chartly, resumable=True)}
LABELS = {"baseline": "bare httpx + orjson + pyarrow",
          "chartly": "chartly fetch_window (guard, envelopes, hashes, checks, Parquet)",
          "chartly-resumable": "same + every page staged with its checkpoint (Dagster assets)"}


def run_worker(name: str, port: int, records: int, page: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--port", str(port),
             "--records", str(records), "--page", str(page), "--out", tmp],
            capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["process_seconds"] = elapsed
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per pipeline (median)")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--port", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    if args.worker:
        began = time.perf_counter()
        count = WORKERS[args.worker](args.port, args.records, args.page, args.out)
        seconds = time.perf_counter() - began
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"records": count, "seconds": seconds, "rss_mb": rss_mb}))
        return 0

    with sandbox_process(EVENTS_PER_SECOND * 3600) as (_, port):
        results: dict[str, list[dict[str, float]]] = {name: [] for name in WORKERS}
        for _ in range(args.repeat):  # interleaved, so drift hits both pipelines alike
            for name in WORKERS:
                results[name].append(run_worker(name, port, args.records, args.page))

    base = statistics.median(r["seconds"] for r in results["baseline"])
    print(f"\n{args.records:,}-record window, {args.page}-record pages, cursor pagination, "
          f"sandbox on loopback, median of {args.repeat}\n")
    print("| pipeline | records | seconds | records/s | time vs baseline | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name in WORKERS:
        runs = results[name]
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = max(r["rss_mb"] for r in runs)
        print(f"| {LABELS[name]} | {int(runs[0]['records']):,} | {seconds:.2f} | "
              f"{runs[0]['records'] / seconds:,.0f} | {seconds / base:.2f}x | {rss:.0f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
