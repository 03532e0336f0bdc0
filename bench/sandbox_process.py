"""The sandbox in a process of its own, as `chartly-tool sandbox serve` runs it.

Benchmarks keep server and client apart so they never share a GIL; both scripts start it
the same way from here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit


@contextmanager
def sandbox_process(events_per_hour: int) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """(server process, port) of a sandbox on a free loopback port; stopped on exit."""
    server = subprocess.Popen(
        [sys.executable, "-m", "chartly_dagster.sandbox", "--port", "0",
         "--events-per-hour", str(events_per_hour)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        port = urlsplit(banner.split()[3]).port
        assert port, banner
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=10)
