"""Code location for a distributed deployment (Kubernetes run pods, or any run launcher).

Same assets, checks, pools and schedules as the top-level definitions.py; what changes is
where things live, all named by environment variables so nothing machine-specific is
baked into the image:

- CHARTLY_STORAGE_ROOT: fsspec URL the Parquet partitions are written under, shared by
  every worker (s3://bucket/prefix needs `s3fs` in the image, gs:// `gcsfs`, abfs://
  `adlfs`; a shared mount as file:///path works too);
- CHARTLY_STAGING_ROOT: local or mounted folder for windows in flight;
- CHARTLY_SECRETS_DIR: mounted Kubernetes Secret folder for the `file` secret provider;
- CHARTLY_ENV: which profile variants this deployment runs (default prod);
- CHARTLY_PROFILES_DIR: the profiles folder (default: profiles/ next to this repo's root).

Check it without a cluster or network:
    CHARTLY_STORAGE_ROOT=s3://bucket/chartly dagster definitions validate \
        -f deploy/k8s/definitions.py
"""

import os
from pathlib import Path

from dagster import EnvVar

from chartly_dagster.integration import (
    ChartlyResource,
    SecretsConfig,
    StorageConfig,
    build_definitions,
)

PROFILES = Path(os.environ.get("CHARTLY_PROFILES_DIR",
                               Path(__file__).resolve().parents[2] / "profiles"))

defs = build_definitions(
    PROFILES,
    resource=ChartlyResource(
        env=os.environ.get("CHARTLY_ENV", "prod"),
        storage=StorageConfig(root=EnvVar("CHARTLY_STORAGE_ROOT"),
                              staging_root=EnvVar("CHARTLY_STAGING_ROOT")),
        secrets=SecretsConfig(secrets_dir_env_var="CHARTLY_SECRETS_DIR")),
)
