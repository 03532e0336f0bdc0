"""Resolve `secretRef {name, key}` to values that never show up in logs, reprs or pickles.

Providers, tried in the order given:

* `EnvSecretProvider`: environment variable ``CHARTLY_SECRET_<NAME>_<KEY>``, where name and
  key are upper-cased and every character that is not a letter or digit becomes ``_``.
  ``secretRef {name: github-api, key: token}`` reads ``CHARTLY_SECRET_GITHUB_API_TOKEN``.
  Distinct refs can share a variable (``a-b``/``c`` and ``a``/``b-c``); when that matters,
  use mounted files.
* `FileSecretProvider`: the file ``<root>/<name>/<key>`` (one Kubernetes Secret volume
  mounted per name); one trailing newline is dropped; symlinks may not leave ``root``.
* `MappingSecretProvider`: an in-memory mapping, for tests.

A secret that no provider holds is `SecretNotFound` (precondition_failed, exit 3) naming
the ref. Every resolved value is registered with the resolver's `Redactor`.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from ..core.profile import Auth, SecretRef
from .errors import SecretInvalid, SecretNotFound
from .redact import Redactor

__all__ = [
    "EnvSecretProvider",
    "FileSecretProvider",
    "MappingSecretProvider",
    "ResolvedAuth",
    "SecretProvider",
    "SecretResolver",
    "SecretValue",
]

ENV_PREFIX = "CHARTLY_SECRET_"
MAX_SECRET_FILE_BYTES = 1024 * 1024  # the Kubernetes Secret size limit
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]")


class SecretValue:
    """A resolved secret: shows as `<secret name/key>` everywhere except `reveal()`."""

    __slots__ = ("_label", "_value")

    def __init__(self, value: str, label: str = "secret") -> None:
        self._value = value
        self._label = label

    def reveal(self) -> str:
        """The plain value; call it only where the value is sent upstream."""
        return self._value

    def __repr__(self) -> str:
        return f"<secret {self._label}>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a SecretValue cannot be pickled or copied")


class SecretProvider(Protocol):
    """A source of secrets; returns None when it does not hold the ref."""

    def get(self, ref: SecretRef) -> str | None: ...


def env_var_name(ref: SecretRef) -> str:
    """`CHARTLY_SECRET_<NAME>_<KEY>`, upper-cased, non-alphanumerics as `_`."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", f"{ref.name}_{ref.key}".upper())


class EnvSecretProvider:
    """Secrets from environment variables named by `env_var_name`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, ref: SecretRef) -> str | None:
        return self._environ.get(env_var_name(ref))

    def describe(self, ref: SecretRef) -> str:
        return f"env {env_var_name(ref)}"


class FileSecretProvider:
    """Secrets from `<root>/<name>/<key>`, the layout of mounted Kubernetes Secrets."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, ref: SecretRef) -> Path:
        return self.root / ref.name / ref.key

    def get(self, ref: SecretRef) -> str | None:
        if ref.key in (".", "..") or ref.name in (".", ".."):
            return None
        path = self._path(ref)
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        # Kubernetes mounts are symlinks into `..data/`; following them is fine inside root.
        if not real.is_relative_to(self.root.resolve()) or not real.is_file():
            return None
        with real.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
        if len(data) > MAX_SECRET_FILE_BYTES:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretInvalid(f"secret {ref} in {self._path(ref)} is not UTF-8",
                                field="secretRef") from None
        return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")

    def describe(self, ref: SecretRef) -> str:
        return f"file {self._path(ref)}"


class MappingSecretProvider:
    """Secrets from a mapping keyed by `(name, key)` or `"name/key"`: for tests, and for a
    worker process, which gets the values its step resolved (`runtime/workers.py`)."""

    def __init__(self, mapping: Mapping[tuple[str, str], str] | Mapping[str, str]) -> None:
        self._values: dict[tuple[str, str], str] = {}
        for k, v in mapping.items():
            name, key = k if isinstance(k, tuple) else tuple(str(k).split("/", 1))
            self._values[(name, key)] = v

    def get(self, ref: SecretRef) -> str | None:
        return self._values.get((ref.name, ref.key))

    def describe(self, ref: SecretRef) -> str:
        return "a given mapping"


@dataclass(frozen=True)
class ResolvedAuth:
    """An `Auth` with its secrets resolved; what the HTTP client needs to authenticate."""

    mode: str
    secret: SecretValue | None = None
    username: SecretValue | None = None
    header_name: str | None = None
    query_param: str | None = None

    def headers(self) -> dict[str, str]:
        """Auth headers to send to the profile's own origin (and nowhere else)."""
        if self.mode == "bearer" and self.secret is not None:
            return {"Authorization": f"Bearer {self.secret.reveal()}"}
        if self.mode == "apiKeyHeader" and self.secret and self.header_name:
            return {self.header_name: self.secret.reveal()}
        if self.mode == "basic" and self.secret is not None and self.username is not None:
            return {"Authorization": f"Basic {basic_token(self.username, self.secret)}"}
        return {}

    def params(self) -> dict[str, str]:
        """Auth query parameters to send to the profile's own origin."""
        if self.mode == "apiKeyQuery" and self.secret is not None and self.query_param:
            return {self.query_param: self.secret.reveal()}
        return {}

    def values(self) -> frozenset[str]:
        """The plain secret values, for spotting one echoed back in a redirect URL."""
        return frozenset(s.reveal() for s in (self.secret, self.username) if s is not None)

    def header_names(self) -> frozenset[str]:
        """Lower-cased names of headers that carry credentials; stripped across origins."""
        names = {"authorization", "proxy-authorization", "cookie"}
        if self.header_name:
            names.add(self.header_name.lower())
        return frozenset(names)


def basic_token(username: SecretValue, password: SecretValue) -> str:
    raw = f"{username.reveal()}:{password.reveal()}".encode()
    return base64.b64encode(raw).decode("ascii")


#: shortest token, API key or password accepted
MIN_CREDENTIAL_LENGTH = 8


class SecretResolver:
    """Resolves refs through providers in order and registers each value for redaction."""

    def __init__(self, providers: Sequence[SecretProvider],
                 redactor: Redactor | None = None) -> None:
        self.providers = list(providers)
        self.redactor = redactor if redactor is not None else Redactor()

    def resolve(self, ref: SecretRef) -> SecretValue:
        """The value of `ref`; `SecretNotFound` (exit 3) naming the ref when none holds it."""
        for provider in self.providers:
            value = provider.get(ref)
            if value:
                self.redactor.add(value)
                return SecretValue(value, f"{ref.name}/{ref.key}")
        looked = [getattr(p, "describe", lambda r, p=p: type(p).__name__)(ref)
                  for p in self.providers]
        raise SecretNotFound(f"secret {ref} not found (looked in: "
                             f"{'; '.join(looked) or 'no providers'})", field="secretRef")

    def resolve_auth(self, auth: Auth) -> ResolvedAuth:
        """Resolve every ref of `auth`, refusing values that cannot travel in a header."""
        refs = auth.secret_refs()
        if not refs:
            return ResolvedAuth("none")
        secret_ref, username_ref = refs[0], auth.username_ref()
        secret = self.resolve(secret_ref)
        if len(secret.reveal()) < MIN_CREDENTIAL_LENGTH:
            # Too weak to send, and too short to scrub: redacting a 4-letter value would
            # blank out every ordinary word that contains it.
            _invalid(secret_ref, f"shorter than {MIN_CREDENTIAL_LENGTH} characters")
        username = None
        if username_ref is not None:
            username = self.resolve(username_ref)
            if ":" in username.reveal():
                _invalid(username_ref, "a basic-auth user name must not hold ':'")
        query_param = auth.credential_param()
        if query_param is None:
            for ref, value in ((secret_ref, secret), (username_ref, username)):
                if ref is not None and value is not None and _UNSAFE_IN_HEADER.search(
                        value.reveal()):
                    _invalid(ref, "the value holds control characters (line breaks?)")
        else:
            self.redactor.add_param(query_param)
        if username is not None:
            self.redactor.add(basic_token(username, secret))
        return ResolvedAuth(auth.mode, secret, username, auth.credential_header(), query_param)


def _invalid(ref: SecretRef, why: str) -> NoReturn:
    raise SecretInvalid(f"secret {ref} cannot be used: {why}", field="secretRef")
