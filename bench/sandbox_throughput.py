"""How fast the sandbox serves: records/s for one window walked with cursor pagination.

The sandbox runs in its own process (as `chartly-tool sandbox serve` would), so client and
server do not share a GIL; the client is the cheapest possible one (http.client on one
keep-alive connection, orjson to count records), so the number measures the server.

    .venv/bin/python bench/sandbox_throughput.py [--records 1000000] [--page 1000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import time
from urllib.parse import urlencode

import orjson
from sandbox_process import sandbox_process

from chartly_dagster.sandbox.data import ORIGIN_EPOCH_S, format_rfc3339

EVENTS_PER_SECOND = 100  # 1M records fit in 10,000 s: well inside a 366-day window


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process (Linux /proc): throughput per CPU second does not move
    when other work shares the machine, wall-clock records/s does."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def walk(port: int, since: str, until: str, page: int) -> tuple[int, int, int]:
    """(records, pages, bytes) for one cursor walk of [since, until)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    params = {"since": since, "until": until, "limit": page}
    records = pages = size = 0
    try:
        while True:
            conn.request("GET", "/v1/events?" + urlencode(params))
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
            parsed = orjson.loads(body)
            records += len(parsed["data"]["items"])
            pages += 1
            size += len(body)
            if parsed["next_cursor"] is None:
                return records, pages, size
            params["cursor"] = parsed["next_cursor"]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2, help="walks of the same window")
    args = parser.parse_args(argv)

    with sandbox_process(EVENTS_PER_SECOND * 3600) as (server, port):
        start = ORIGIN_EPOCH_S + 31 * 86400
        since = format_rfc3339(start)
        until = format_rfc3339(start + args.records // EVENTS_PER_SECOND)
        print(f"window [{since}, {until}), {args.page}-record pages, server pid {server.pid}")
        for run in range(1, args.runs + 1):
            began, server_cpu = time.perf_counter(), cpu_seconds(server.pid)
            client_cpu = time.process_time()
            records, pages, size = walk(port, since, until, args.page)
            elapsed = time.perf_counter() - began
            server_cpu = cpu_seconds(server.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
            print(f"run {run}: {records:,} records in {pages:,} pages, {size / 1e6:,.0f} MB, "
                  f"{elapsed:.2f} s -> {records / elapsed:,.0f} records/s "
                  f"({size / 1e6 / elapsed:,.0f} MB/s); server CPU {server_cpu:.2f} s = "
                  f"{records / max(server_cpu, 1e-9):,.0f} records per server CPU second, "
                  f"client CPU {client_cpu:.2f} s")
    peak_mb = {who: resource.getrusage(who).ru_maxrss / 1024
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
    print(f"peak RSS: client {peak_mb[resource.RUSAGE_SELF]:.0f} MB, "
          f"server {peak_mb[resource.RUSAGE_CHILDREN]:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
