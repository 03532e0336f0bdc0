"""Shared test support: one place for every fixture and helper the test folders use.

Fixture modules are pytest plugins, registered once in tests/conftest.py, so a test asks
for a fixture by name and imports nothing for it. Plain helpers (constants, builders,
servers) are imported explicitly from the module that owns them:

- `paths`: the repository root and the shipped profiles/golden folders
- `secrets`: the sandbox's credentials, as the profiles reference them and as variables
- `net`: a free loopback port
- `sandbox` (plugin): sandbox servers and the shipped profiles re-pointed at one
- `live` (plugin): the runtime tests' `Live` sandbox + profiles + fetch helper
- `instance` (plugin): a temporary Dagster instance
- `postgres` (plugin): a throwaway PostgreSQL cluster
- `offline`: profile documents and the in-process CLI runner for offline tests
- `egress`: hand-built profiles, fake resolvers and loopback servers for transport tests
- `ui`: `dagster dev` and Chromium for the browser test
"""
