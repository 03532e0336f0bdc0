"""Shared pytest setup: every fixture lives in a plugin module of tests/support."""

pytest_plugins = ["tests.support.sandbox", "tests.support.live", "tests.support.instance",
                  "tests.support.postgres"]
