"""Typing benchmark: a fetched 1,000,000-record window typed (inferred and declared columns).

The window is fetched once with the product path (`fetch_window`, as in `bench/run.py`),
then each typing pipeline runs in its own fresh process on that envelope file, so peak RSS
is its own. Prints one table: records/s, time vs the fetch, peak RSS.

    .venv/bin/python bench/typed.py [--records N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import EVENTS_PER_SECOND, worker_chartly
from sandbox_process import sandbox_process

# The sandbox's /v1/events records, declared (the inferred run finds the same fields).
DECLARED = [
    {"name": "id", "type": "string", "nullable": False},
    {"name": "occurred", "source": "occurred_at", "type": "timestamp", "nullable": False},
    {"name": "amount", "type": "decimal(12,2)", "nullable": False},
    {"name": "currency", "type": "string"},
    {"name": "customer_id", "source": "customer.id", "type": "string"},
    {"name": "customer_name", "source": "customer.name", "type": "string"},
    {"name": "text", "type": "string"},
]


def worker_fetch(port: int, records: int, page: int, out: Path) -> int:
    return worker_chartly(port, records, page, out)


def _envelope_file(out: Path) -> Path:
    return next((out / "data").rglob("*.parquet"))


def worker_typed(out: Path, declared: bool) -> int:
    from chartly_dagster.core.profile import ColumnSpec
    from chartly_dagster.runtime.typed import declared_columns, type_window

    columns = (declared_columns([ColumnSpec.model_validate(c) for c in DECLARED])
               if declared else None)
    target = out / "typed" / ("declared" if declared else "inferred") / "part-0.parquet"
    return type_window(str(_envelope_file(out)), str(target), columns).rows


LABELS = {"fetch": "fetch_window (the envelope file typed below)",
          "inferred": "type_window, columns inferred (two passes)",
          "declared": "type_window, columns declared (one pass)"}


def _run(args: list[str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args[1]} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per typing pipeline")
    parser.add_argument("--worker", choices=sorted(LABELS))
    parser.add_argument("--port", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    if args.worker:
        began = time.perf_counter()
        if args.worker == "fetch":
            count = worker_fetch(args.port, args.records, args.page, args.out)
        else:
            count = worker_typed(args.out, declared=args.worker == "declared")
        seconds = time.perf_counter() - began
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"records": count, "seconds": seconds, "rss_mb": rss_mb}))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        with sandbox_process(EVENTS_PER_SECOND * 3600) as (_, port):
            fetched = _run(["--worker", "fetch", "--port", str(port), "--records",
                            str(args.records), "--page", str(args.page), "--out", tmp])
        results: dict[str, list[dict[str, float]]] = {"inferred": [], "declared": []}
        for _ in range(args.repeat):
            for name in results:
                results[name].append(_run(["--worker", name, "--out", tmp]))

    fetch_seconds = fetched["seconds"]
    print(f"\n{args.records:,}-record window typed from its envelope file, "
          f"median of {args.repeat}\n")
    print("| pipeline | records | seconds | records/s | time vs fetch | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(f"| {LABELS['fetch']} | {int(fetched['records']):,} | {fetch_seconds:.2f} | "
          f"{fetched['records'] / fetch_seconds:,.0f} | 1.00x | {fetched['rss_mb']:.0f} MB |")
    for name, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = max(r["rss_mb"] for r in runs)
        print(f"| {LABELS[name]} | {int(runs[0]['records']):,} | {seconds:.2f} | "
              f"{runs[0]['records'] / seconds:,.0f} | {seconds / fetch_seconds:.2f}x | "
              f"{rss:.0f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
