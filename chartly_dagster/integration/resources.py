"""`ChartlyResource`: the one resource connector assets and checks need.

Like `SlingResource` and `DagsterDltResource`, it owns the external work: `fetch(context)`
returns the event iterator that fetches the run's windows. It holds the deployment's env
(the one place it is set), where files go, where secrets come from and what egress may
reach. It is configured with names, paths and `EnvVar`s only, so the Dagster UI shows
`CHARTLY_SECRETS_DIR` rather than anything it points at; assets never read environment
variables themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from enum import Enum
from types import MappingProxyType

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetObservation,
    Config,
    ConfigurableResource,
    DagsterInstance,
    MaterializeResult,
)
from pydantic import Field

from ..runtime import storage
from ..runtime.egress import EnvPolicy
from ..runtime.secrets import (
    EnvSecretProvider,
    FileSecretProvider,
    SecretProvider,
    SecretResolver,
)
from .events import DEFAULT_PROGRESS_INTERVAL_SECONDS, connector_events

RESOURCE_KEY = "chartly"


class SecretProviderName(Enum):
    """The runtime's secret providers a deployment may enable."""

    ENV = "env"
    FILE = "file"


class StorageConfig(Config):
    """Where partitions land: a local folder by default (under DAGSTER_HOME), or any fsspec URL.

    Staging (the pages of a window in flight) stays on local disk next to the instance
    unless `staging_root` names a folder shared between the machines that may retry.
    """

    root: str | None = Field(None, description=(
        "Folder or fsspec URL (s3://bucket/prefix, gs://..., file:///...) the Parquet files "
        "are written under; default <DAGSTER_HOME>/chartly/data."))
    staging_root: str | None = Field(None, description=(
        "Local folder for windows in flight; default <DAGSTER_HOME>/chartly/staging."))
    record_responses: bool | None = Field(None, description=(
        "Record every response of each partition next to its file (replayable, re-derived "
        "by the deterministic check); overrides the profile's recording.enabled. Default: "
        "the profile's setting, else on in dev only."))

    def destination(self, instance: DagsterInstance) -> str:
        return (self.root or f"{instance.root_directory}/chartly/data").rstrip("/")

    def staging_dir(self, instance: DagsterInstance) -> str:
        return (self.staging_root or f"{instance.root_directory}/chartly/staging").rstrip("/")

    def iter_batches(self, uri: str,
                     batch_size: int = storage.ROW_GROUP_ROWS) -> Iterator[pa.RecordBatch]:
        """Stream one written partition, so checks never hold a whole window in memory."""
        return storage.iter_window_batches(uri, batch_size)

    def read_table(self, uri: str) -> pa.Table:
        """Read one written partition back, whatever filesystem its URI names."""
        return storage.read_window_file(uri)

    def write_table(self, table: pa.Table, uri: str) -> None:
        """Write a derived table (connector partitions are written by the runtime)."""
        storage.write_table(table, uri)


class SecretsConfig(Config):
    """Resolves `secretRef`s through the runtime's providers, in the order configured.

    `env` reads `CHARTLY_SECRET_<NAME>_<KEY>` variables; `file` reads mounted secrets at
    `<folder>/<name>/<key>` (Kubernetes Secret volumes). The folder is `secrets_dir` if set,
    else the folder named by the variable `secrets_dir_env_var`; an unset or empty variable
    means "no secrets folder", so a deployment that only sets `CHARTLY_SECRET_*` variables
    needs nothing else.
    """

    providers: list[SecretProviderName] = Field(
        default_factory=lambda: [SecretProviderName.ENV, SecretProviderName.FILE],
        description="Providers to try, in order.")
    secrets_dir: str | None = Field(None, description=(
        "Mounted secrets folder for the `file` provider (overrides secrets_dir_env_var)."))
    secrets_dir_env_var: str | None = Field("CHARTLY_SECRETS_DIR", description=(
        "Name of the variable holding the mounted secrets folder; unset means no folder."))

    def folder(self) -> str | None:
        if self.secrets_dir:
            return self.secrets_dir
        if self.secrets_dir_env_var:
            return os.environ.get(self.secrets_dir_env_var) or None
        return None

    def _provider(self, name: SecretProviderName) -> SecretProvider | None:
        if name == SecretProviderName.ENV:
            return EnvSecretProvider()
        folder = self.folder()
        return FileSecretProvider(folder) if folder else None

    def resolver(self) -> SecretResolver:
        """A fresh resolver per run, so the redactor only knows this run's values."""
        chosen = [self._provider(name) for name in self.providers]
        return SecretResolver([p for p in chosen if p is not None])


class EgressConfig(Config):
    """Which address space each env may open, and timeout caps.

    A profile's `egressPolicy.allowedCidrs` must sit inside its env's ranges here; plain
    http is accepted only in the listed envs (the dev sandbox). The `max_*_ms` caps bound
    every profile's transport timeouts in this deployment: min(profile, cap), never more.
    """

    allowed_cidrs: dict[str, list[str]] | None = Field(None, description=(
        "CIDRs each env may allow into non-public space; default: loopback and private in "
        "dev, private only in staging and prod."))
    plaintext_http_envs: list[str] = Field(default_factory=lambda: ["dev"])
    max_timeout_ms: int | None = Field(None, gt=0, description=(
        "Cap on each profile's transport.timeoutMs (read/write per phase); only ever lowers "
        "the profile's value."))
    max_connect_timeout_ms: int | None = Field(None, gt=0, description=(
        "Cap on each profile's transport.connectTimeoutMs; only ever lowers it."))
    max_deadline_ms: int | None = Field(None, gt=0, description=(
        "Cap on each profile's transport.deadlineMs (one request, body included); only ever "
        "lowers it."))

    def policy(self) -> EnvPolicy:
        caps = {"plaintext_http_envs": frozenset(self.plaintext_http_envs),
                "max_timeout_ms": self.max_timeout_ms,
                "max_connect_timeout_ms": self.max_connect_timeout_ms,
                "max_deadline_ms": self.max_deadline_ms}
        if self.allowed_cidrs is None:
            return EnvPolicy(**caps)
        cidrs: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {env: tuple(values) for env, values in self.allowed_cidrs.items()})
        return EnvPolicy(allowable_cidrs=cidrs, **caps)


class ChartlyResource(ConfigurableResource):
    """Fetches connector windows for `@chartly_assets` and reads them back for the checks."""

    env: str = Field(description=(
        "dev, staging or prod: which resolved profiles (base or variant) this deployment "
        "runs, and which egress ranges they may reach."))
    storage: StorageConfig = Field(default_factory=StorageConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    egress: EgressConfig = Field(default_factory=EgressConfig)
    max_concurrent_windows: int | None = Field(None, ge=1, le=16, description=(
        "Windows of one range run fetched at once, sharing each connector's rate limit and "
        "connection pool; only ever lowers a profile's partitions.maxConcurrentWindows. "
        "Default: the profile's value, else 4."))
    window_processes: int | None = Field(None, ge=0, le=16, description=(
        "Windows of a range fetched in worker processes, on other cores, within the windows "
        "in flight (threads share one interpreter lock, so only processes speed up a "
        "CPU-bound range). Default: up to one fewer than this process's CPUs, used only "
        "while the step's process is busy; 0: threads only; N: up to N from the start."))
    progress_interval_seconds: float = Field(DEFAULT_PROGRESS_INTERVAL_SECONDS, gt=0, description=(
        "At most one progress observation per window per this many seconds, counted from "
        "the window's start (so a shorter window reports only its end); resume points are "
        "kept in staging, not here."))

    def fetch(self, context: AssetExecutionContext
              ) -> Iterator[AssetObservation | MaterializeResult]:
        """Fetch every window of the run, yielding Dagster events as pages land.

        The profile comes from the spec metadata `@chartly_assets` left on the asset, as
        `DagsterDltResource.run` finds its source.
        """
        return connector_events(
            context, env=self.env, destination=self.storage.destination(context.instance),
            staging_dir=self.storage.staging_dir(context.instance),
            secrets=self.secrets.resolver(), env_policy=self.egress.policy(),
            record_responses=self.storage.record_responses,
            max_concurrent_windows=self.max_concurrent_windows,
            window_processes=self.window_processes,
            progress_interval_seconds=self.progress_interval_seconds)
