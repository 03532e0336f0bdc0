"""Shared pytest setup; each area's fixtures live in their own plugin module."""

pytest_plugins = ["tests.support.sandbox", "tests.support.profiles", "tests.support.live",
                  "tests.support.dagster_fixtures"]
