"""Shared pytest setup: every fixture lives in a plugin module of tests/support."""

import signal

import pytest

pytest_plugins = ["tests.support.sandbox", "tests.support.live", "tests.support.instance",
                  "tests.support.postgres"]


def pytest_configure(config: pytest.Config) -> None:
    """Run as in a terminal even when started in the background of a shell without job
    control (`make test &`), which starts the suite with SIGINT ignored: Dagster maps
    SIGTERM to SIGINT's handler when it runs in process, so SIGTERM would be ignored as
    well, and so by every server a test starts and then stops with SIGTERM."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
