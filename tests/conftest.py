"""Shared pytest setup; each area's fixtures live in their own plugin module."""

pytest_plugins = ["tests.fixtures_sandbox", "tests.fixtures_profiles", "tests.fixtures_runtime",
                  "tests.fixtures_dagster"]
