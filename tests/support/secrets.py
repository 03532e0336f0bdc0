"""The test secrets, defined once: the credentials the sandbox checks, per profile secret.

`SECRETS` is keyed by the profiles' secret references (name, key); `SECRET_ENV` is the same
values as the env provider reads them (`CHARTLY_SECRET_<NAME>_<KEY>`); `write_secrets`
lays them out as mounted files for the file provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from chartly_dagster.runtime.secrets import MappingSecretProvider, SecretResolver

SECRETS: dict[tuple[str, str], str] = {
    ("sales-api", "token"): "sandbox-token-7f3a9c",
    ("orders-api", "api-key"): "sandbox-orders-key-51d2",
    ("billing-api", "api-key"): "sandbox-billing-key-88e0",
    ("helpdesk", "username"): "support-bot",
    ("helpdesk", "password"): "sandbox-helpdesk-pw-3b1",
}
#: spelled out here rather than via `env_var_name`, so the naming rule is checked, not reused
SECRET_ENV: dict[str, str] = {
    "CHARTLY_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{name}_{key}".upper()): value
    for (name, key), value in SECRETS.items()}


def sandbox_secrets() -> SecretResolver:
    """A resolver that answers every shipped profile's secret reference."""
    return SecretResolver([MappingSecretProvider(SECRETS)])


def write_secrets(folder: Path, secrets: Mapping[tuple[str, str], str] = SECRETS) -> Path:
    """Mounted-secret layout (`<dir>/<name>/<key>`) for the file provider."""
    for (name, key), value in secrets.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / key).write_text(value + "\n", encoding="utf-8")
    return folder
