"""Secret providers, the resolver, wrapped values, auth modes and inline-credential refusal."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from chartly_dagster.core.catalog import ProfileCatalog
from chartly_dagster.core.errors import ExitCode, ProfileInvalid
from chartly_dagster.core.profile import Auth, SecretRef
from chartly_dagster.runtime.errors import SecretInvalid, SecretNotFound
from chartly_dagster.runtime.redact import REDACTED, Redactor
from chartly_dagster.runtime.secrets import (
    EnvSecretProvider,
    FileSecretProvider,
    MappingSecretProvider,
    SecretResolver,
    SecretValue,
    env_var_name,
)
from tests.support.egress import make_profile

REF = SecretRef(name="github-api", key="token")


def test_secret_value_never_shows_itself() -> None:
    value = SecretValue("hunter2-secret", "github-api/token")
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", f"{value:>30}",
                  repr([value]), repr({"v": value})):
        assert "hunter2" not in shown
    assert str(value) == "<secret github-api/token>"
    assert value.reveal() == "hunter2-secret"
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            attempt(value)
    assert value == SecretValue("hunter2-secret") and value != SecretValue("other")


def test_env_provider_uses_the_documented_name() -> None:
    assert env_var_name(REF) == "CHARTLY_SECRET_GITHUB_API_TOKEN"
    assert env_var_name(SecretRef(name="a.b-c", key="x_Y.z")) == "CHARTLY_SECRET_A_B_C_X_Y_Z"
    provider = EnvSecretProvider({"CHARTLY_SECRET_GITHUB_API_TOKEN": "from-env"})
    assert provider.get(REF) == "from-env"
    assert provider.get(SecretRef(name="other", key="token")) is None


def test_env_provider_reads_the_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("CHARTLY_SECRET_GITHUB_API_TOKEN", "real-env")
    assert SecretResolver([EnvSecretProvider()]).resolve(REF).reveal() == "real-env"


def test_file_provider_reads_kubernetes_layout(tmp_path: Path) -> None:
    # Kubernetes mounts keys as symlinks into a timestamped ..data directory.
    data = tmp_path / "github-api" / "..2026_01_01"
    data.mkdir(parents=True)
    (data / "token").write_text("from-file\n")
    (tmp_path / "github-api" / "..data").symlink_to(data.name)
    (tmp_path / "github-api" / "token").symlink_to("..data/token")
    provider = FileSecretProvider(tmp_path)
    assert provider.get(REF) == "from-file"
    assert provider.get(SecretRef(name="github-api", key="missing")) is None


def test_file_provider_refuses_paths_that_leave_the_root(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    (root / "api").mkdir(parents=True)
    (tmp_path / "outside").write_text("not yours")
    (root / "api" / "escape").symlink_to(tmp_path / "outside")
    provider = FileSecretProvider(root)
    assert provider.get(SecretRef(name="api", key="escape")) is None
    assert provider.get(SecretRef(name="api", key="..")) is None


def test_mapping_provider_accepts_both_key_shapes() -> None:
    provider = MappingSecretProvider({("a", "k"): "one", "b/k": "two"})
    assert provider.get(SecretRef(name="a", key="k")) == "one"
    assert provider.get(SecretRef(name="b", key="k")) == "two"


def test_providers_are_tried_in_order_and_values_registered() -> None:
    redactor = Redactor()
    resolver = SecretResolver([MappingSecretProvider({}),
                               MappingSecretProvider({"github-api/token": "second"})],
                              redactor=redactor)
    assert resolver.resolve(REF).reveal() == "second"
    assert redactor.scrub("token=second and second") == f"token={REDACTED} and {REDACTED}"


def test_missing_secret_is_precondition_failed_naming_the_ref(tmp_path: Path) -> None:
    resolver = SecretResolver([EnvSecretProvider({}), FileSecretProvider(tmp_path),
                               MappingSecretProvider({"github-api/token": ""})])
    with pytest.raises(SecretNotFound) as info:
        resolver.resolve(REF)
    assert info.value.exit_code == ExitCode.PRECONDITION_FAILED
    assert "secretRef:github-api/token" in info.value.message
    assert "CHARTLY_SECRET_GITHUB_API_TOKEN" in info.value.message


def _auth(mode: str, **extra: object) -> Auth:
    return TypeAdapter(Auth).validate_python(
        {"mode": mode, "secretRef": {"name": "api", "key": "token"}, **extra})


def test_auth_modes_produce_headers_or_params() -> None:
    token = "tok-7f3a9c21"
    resolver = SecretResolver([MappingSecretProvider({"api/token": token, "api/user": "me"})])
    assert resolver.resolve_auth(_auth("bearer")).headers() == {"Authorization": f"Bearer {token}"}
    header = resolver.resolve_auth(_auth("apiKeyHeader", headerName="X-Key"))
    assert header.headers() == {"X-Key": token} and "x-key" in header.header_names()
    query = resolver.resolve_auth(_auth("apiKeyQuery", queryParam="k"))
    assert query.params() == {"k": token} and query.headers() == {}
    basic = resolver.resolve_auth(_auth("basic", usernameSecretRef={"name": "api",
                                                                    "key": "user"}))
    assert basic.headers() == {"Authorization": "Basic bWU6dG9rLTdmM2E5YzIx"}
    assert resolver.redactor.scrub("Basic bWU6dG9rLTdmM2E5YzIx") == f"Basic {REDACTED}"
    assert resolver.redactor.scrub(f"/x?k={token}") == f"/x?k={REDACTED}"
    assert token not in repr(basic) and "bWU6" not in repr(basic)


def test_short_credentials_are_refused_without_echo() -> None:
    """A 4-letter secret is weak, and scrubbing it would blank every word containing it."""
    resolver = SecretResolver([MappingSecretProvider({"api/token": "demo"})])
    with pytest.raises(SecretInvalid) as info:
        resolver.resolve_auth(_auth("bearer"))
    assert info.value.exit_code == ExitCode.VALIDATION_FAILED
    assert "shorter than 8 characters" in info.value.message
    assert "demo" not in info.value.message


@pytest.mark.parametrize(("values", "mode", "extra"), [
    ({"api/token": "zq9\r\nX-Evil: 1"}, "bearer", {}),
    ({"api/token": "zq9-long\x00"}, "apiKeyHeader", {"headerName": "X-Key"}),
    ({"api/token": "pw-long-enough", "api/user": "a:b"}, "basic",
     {"usernameSecretRef": {"name": "api", "key": "user"}}),
])
def test_values_that_cannot_travel_in_a_header_are_refused(values, mode, extra) -> None:
    resolver = SecretResolver([MappingSecretProvider(values)])
    with pytest.raises(SecretInvalid) as info:
        resolver.resolve_auth(_auth(mode, **extra))
    assert info.value.exit_code == ExitCode.VALIDATION_FAILED
    assert "zq9" not in info.value.message and "a:b" not in info.value.message


def test_build_client_without_a_resolver_fails_before_the_network() -> None:
    from chartly_dagster.runtime.http import build_client

    resolved = make_profile(auth={"mode": "bearer", "secretRef": {"name": "api", "key": "t"}})
    with pytest.raises(SecretNotFound, match="secretRef:api/t"):
        build_client(resolved, env="dev")
    with pytest.raises(SecretNotFound, match="secretRef:api/t"):
        build_client(resolved, env="dev", secrets=SecretResolver([]))


INLINE = [
    ("auth:\n    mode: bearer\n    token: abcdef123456\n", "token"),
    ("request:\n    headers:\n      X-Trace: 'Bearer abcdefghijklmnop'\n", "X-Trace"),
    ("request:\n    params:\n      q: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkw.sig'\n", "q"),
    ("request:\n    params:\n      k: AKIAABCDEFGHIJKLMNOP\n", "k"),
    ("request:\n    params:\n      k: ghp_abcdefghijklmnopqrstuvwxyz0123456789\n", "k"),
    ("request:\n    params:\n      apiKey: plain-text-key\n", "apiKey"),
    ("golden: 'https://user:pw@example.com/golden'\n", "golden"),
    ("golden: 'https://example.com/golden?api_key=abc'\n", "golden"),
]


@pytest.mark.parametrize(("fragment", "field"), INLINE)
def test_profile_with_an_inline_credential_is_rejected_at_load(tmp_path: Path, fragment,
                                                               field) -> None:
    text = PROFILE_YAML + "  " + fragment
    (tmp_path / "p.yaml").write_text(text)
    catalog = ProfileCatalog.load(tmp_path)
    assert catalog.issues, text
    assert any(field in issue.field for issue in catalog.issues)
    with pytest.raises(ProfileInvalid) as info:
        catalog.raise_for_issues()
    for secret in ("abcdef123456", "AKIAABCDEFGHIJKLMNOP", "plain-text-key", "user:pw"):
        assert secret not in info.value.message


PROFILE_YAML = """\
apiVersion: chartly.io/v1alpha1
kind: Profile
metadata: {kind: connector, name: events, namespace: acme/core, version: 1.0.0}
spec:
  envs: [dev]
  transport: {baseUrl: 'https://api.example.test'}
  egressPolicy: {dnsAllowlist: [api.example.test]}
  records: {idField: id, timeField: ts}
  pagination: {mode: none}
  rateLimit: {maxRequestsPerMinute: 60}
  partitions: {start: '2026-01-01T00:00:00Z'}
"""


def test_the_clean_profile_loads(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PROFILE_YAML)
    assert ProfileCatalog.load(tmp_path).issues == []
