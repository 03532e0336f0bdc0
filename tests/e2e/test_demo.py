"""`make demo` when its sandbox port is taken: a clear message, no traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from examples.demo import SANDBOX_PORT
from tests.support.paths import REPO


def test_demo_with_its_sandbox_port_taken_says_so_without_a_traceback(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        try:  # taken by this test, or already by something else: either way, taken
            holder.bind(("127.0.0.1", SANDBOX_PORT))
            holder.listen()
        except OSError:
            pass
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "CHARTLY_"))}
        env["DAGSTER_HOME"] = str(tmp_path / "home")
        done = subprocess.run([sys.executable, "-m", "examples.demo"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot start the sandbox upstream on 127.0.0.1:{SANDBOX_PORT}" in done.stderr
    assert "make ui" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
