"""Find inline credentials in a profile document before anything else reads it.

Profiles carry `secretRef {name, key}` only; a token pasted into a profile is refused at
load, and the finding names the field, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Keys whose literal value would be a credential (compared without '-', '_' and case).
_SECRET_KEYS = frozenset({
    "password", "passwd", "pwd", "secret", "clientsecret", "token", "accesstoken",
    "refreshtoken", "bearertoken", "idtoken", "apikey", "apitoken", "authtoken", "privatekey",
    "credentials", "credential", "sessiontoken", "secretkey", "accesskey", "authorization",
    "cookie", "signature", "sig", "xapikey",
})
# ...and keys that end like one (`X-Access-Token`, `Private-Token`, `client_password`).
_SECRET_SUFFIXES = ("token", "secret", "password", "apikey", "privatekey", "secretkey",
                    "accesskey")
_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("authorization scheme with a credential",
     re.compile(r"^\s*(bearer|basic|token|digest)\s+\S{8,}", re.I)),
    ("JSON Web Token", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")),
    ("AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private key block", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Stripe-style secret key", re.compile(r"\b(sk|rk)_(live|test)_[A-Za-z0-9]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{30,}")),
)
# Query parameters that carry credentials when they appear in a URL.
CREDENTIAL_PARAMS = frozenset({
    "apikey", "api_key", "api-key", "key", "token", "access_token", "auth", "auth_token",
    "password", "secret", "client_secret", "sig", "signature", "x-api-key", "session",
    "sessionid", "code", "private_token", "refresh_token", "id_token",
})


def _norm(key: str) -> str:
    return re.sub(r"[-_]", "", key).lower()


def _is_secret_key(key: str) -> bool:
    norm = _norm(key)
    return norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES)


def _walk(value: Any, path: str) -> Iterator[tuple[str, str | None, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            yield child, str(key), item
            yield from _walk(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            child = f"{path}[{i}]"
            yield child, None, item
            yield from _walk(item, child)


def _allowed_key_value(key: str, value: Any, path: str) -> bool:
    """A credential-named key is fine where it is a reference or a parameter *name*."""
    if isinstance(value, dict | list) or value is None or isinstance(value, bool):
        return True
    return _norm(key) == "secretref"


def find_inline_credentials(document: Any) -> list[tuple[str, str]]:
    """(field path, reason) for every place that looks like an inline credential."""
    findings: list[tuple[str, str]] = []
    for path, key, value in _walk(document, ""):
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        if parent.endswith(("secretRef", "usernameSecretRef")):
            continue
        if key is not None and _is_secret_key(key) and not _allowed_key_value(
                key, value, path):
            findings.append((path, f"key {key!r} holds a literal value; use a secretRef"))
            continue
        if not isinstance(value, str):
            continue
        for reason, pattern in _VALUE_PATTERNS:
            if pattern.search(value):
                findings.append((path, f"value looks like a {reason}; use a secretRef"))
                break
        else:
            if "://" in value:
                parts = urlsplit(value)
                if "@" in parts.netloc:
                    findings.append((path, "URL carries userinfo; use auth.secretRef"))
                elif any(k.lower() in CREDENTIAL_PARAMS for k, _ in parse_qsl(parts.query)):
                    findings.append((path, "URL query carries a credential parameter"))
    return findings
