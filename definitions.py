"""Dagster code location: every profile under profiles/ as a partitioned asset.

`CHARTLY_ENV` picks which resolved profiles (dev/staging/prod variants) this deployment
runs; the secrets folder is configured by variable name only, so the UI never shows it.
"""

import os
from pathlib import Path

from dagster import EnvVar

from chartly_dagster.integration import (
    ChartlyEgressResource,
    ChartlySecretsResource,
    build_definitions,
)

ENV = os.environ.get("CHARTLY_ENV", "dev")

defs = build_definitions(
    Path(__file__).resolve().parent / "profiles",
    env=ENV,
    secrets=ChartlySecretsResource(secrets_dir=EnvVar("CHARTLY_SECRETS_DIR")),
    egress=ChartlyEgressResource(env=ENV),
)
