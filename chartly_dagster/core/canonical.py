"""Canonical JSON and hashing: the one byte form every hash and golden file is taken over.

Sorted keys, no insignificant whitespace, UTF-8, floats with fixed precision, so the same
value gives the same bytes in any process, locale or time zone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

FLOAT_DIGITS = 6


def _encode(value: Any, out: list[str], indent: int | None, level: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("canonical JSON cannot hold NaN or infinity")
        out.append(format(value, f".{FLOAT_DIGITS}f"))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, datetime):
        out.append(json.dumps(format_rfc3339(value)))
    elif isinstance(value, Mapping):
        keys = sorted(value)
        if any(not isinstance(key, str) for key in keys):
            raise TypeError("canonical JSON keys must be strings")
        _container(out, "{", "}", [(k, value[k]) for k in keys], indent, level)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        _container(out, "[", "]", [(None, item) for item in value], indent, level)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as canonical JSON")


def _container(out: list[str], opening: str, closing: str,
               items: list[tuple[str | None, Any]], indent: int | None, level: int) -> None:
    out.append(opening)
    if not items:
        out.append(closing)
        return
    for i, (key, item) in enumerate(items):
        if i:
            out.append(",")
        if indent is not None:
            out.append("\n" + " " * (indent * (level + 1)))
        if key is not None:
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(": " if indent is not None else ":")
        _encode(item, out, indent, level + 1)
    if indent is not None:
        out.append("\n" + " " * (indent * level))
    out.append(closing)


def canonical_json(value: Any) -> str:
    """Canonical JSON text of `value` (compact)."""
    out: list[str] = []
    _encode(value, out, None, 0)
    return "".join(out)


def canonical_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


def pretty_json(value: Any) -> str:
    """Indented, key-sorted JSON for humans and golden files: canonical JSON with line breaks."""
    out: list[str] = []
    _encode(value, out, 2, 0)
    out.append("\n")
    return "".join(out)


def sha256_hex(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hash_value(value: Any) -> str:
    """`sha256:<hex>` over the canonical bytes of `value`."""
    return sha256_hex(canonical_bytes(value))


def format_rfc3339(moment: datetime) -> str:
    """RFC3339 UTC with `Z`; naive datetimes are refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: a time zone is required")
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
