"""Canonical JSON and hashing: the byte form every hash and golden file is taken over."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chartly_dagster.core.canonical import (
    canonical_bytes,
    canonical_json,
    format_rfc3339,
    hash_value,
    pretty_json,
    sha256_hex,
)


def test_keys_sorted_at_every_level_and_compact() -> None:
    value = {"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "c": None}, "A": True}
    assert canonical_json(value) == '{"A":true,"a":{"c":null,"z":[3,{"x":2,"y":1}]},"b":1}'


def test_insertion_order_does_not_change_bytes_or_hash() -> None:
    one = {"x": 1, "y": {"p": "q", "r": "s"}}
    two = {"y": {"r": "s", "p": "q"}, "x": 1}
    assert canonical_bytes(one) == canonical_bytes(two)
    assert hash_value(one) == hash_value(two)


@pytest.mark.parametrize(("value", "text"), [
    (1.5, "1.500000"),
    (0.1 + 0.2, "0.300000"),
    (1 / 3, "0.333333"),
    (2.0, "2.000000"),
    (-0.25, "-0.250000"),
    (1e-9, "0.000000"),
    (123456789.125, "123456789.125000"),
    (0, "0"),
    (-7, "-7"),
    (10**20, "100000000000000000000"),
    (True, "true"),
    (False, "false"),
    (None, "null"),
])
def test_scalars_and_fixed_float_precision(value: object, text: str) -> None:
    assert canonical_json(value) == text


def test_bool_is_not_an_int() -> None:
    assert canonical_json([True, 1, False, 0]) == "[true,1,false,0]"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN"):
        canonical_json(bad)
    with pytest.raises(ValueError):
        canonical_json({"nested": [1, {"deep": bad}]})
    with pytest.raises(ValueError):
        hash_value({"x": bad})


def test_unicode_is_utf8_not_escaped() -> None:
    value = {"name": "café ☕ 𝄞", "ключ": "значение"}
    text = canonical_json(value)
    assert text == '{"name":"café ☕ 𝄞","ключ":"значение"}'
    assert canonical_bytes(value) == text.encode("utf-8")
    assert json.loads(canonical_bytes(value).decode("utf-8")) == value


def test_control_characters_and_quotes_are_escaped() -> None:
    assert canonical_json('a"b\\c\n\t\x00') == '"a\\"b\\\\c\\n\\t\\u0000"'


def test_non_string_keys_and_unknown_types_refused() -> None:
    with pytest.raises(TypeError):
        canonical_json({1: "x"})
    with pytest.raises(TypeError):
        canonical_json({"x": {1, 2}})
    with pytest.raises(TypeError):
        canonical_json(b"bytes")
    with pytest.raises(TypeError):
        canonical_json(object())


def test_tuples_encode_like_lists() -> None:
    assert canonical_json((1, "a", (2,))) == canonical_json([1, "a", [2]]) == '[1,"a",[2]]'


@pytest.mark.parametrize(("moment", "text"), [
    (datetime(2026, 2, 1, tzinfo=UTC), "2026-02-01T00:00:00Z"),
    (datetime(2026, 2, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
     "2026-02-01T00:00:00Z"),
    (datetime(2026, 1, 31, 16, 0, tzinfo=timezone(timedelta(hours=-8))),
     "2026-02-01T00:00:00Z"),
    (datetime(2026, 2, 1, 0, 0, 0, 1500, tzinfo=UTC), "2026-02-01T00:00:00.001500Z"),
    (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "2026-12-31T23:59:59Z"),
])
def test_rfc3339_is_utc_with_z(moment: datetime, text: str) -> None:
    assert format_rfc3339(moment) == text
    assert canonical_json({"at": moment}) == f'{{"at":"{text}"}}'


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_rfc3339(datetime(2026, 2, 1))
    with pytest.raises(ValueError):
        canonical_json([datetime(2026, 2, 1)])


def test_hash_format() -> None:
    digest = hash_value({"a": 1})
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert digest == sha256_hex(b'{"a":1}')
    assert hash_value({"a": 1}) != hash_value({"a": 1.0})


def test_pretty_json_is_canonical_with_line_breaks() -> None:
    value = {"b": [1, 2.5, {}], "a": {"x": [], "y": "é"}}
    text = pretty_json(value)
    assert text.endswith("}\n")
    assert text == (
        '{\n  "a": {\n    "x": [],\n    "y": "é"\n  },\n'
        '  "b": [\n    1,\n    2.500000,\n    {}\n  ]\n}\n'
    )
    assert json.loads(text) == json.loads(canonical_json(value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_round_trips_through_a_json_parser(value: object) -> None:
    text = canonical_json(value)
    assert json.loads(text) == value
    assert canonical_json(json.loads(text)) == text
    assert json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == text


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_floats_always_have_six_decimals(value: float) -> None:
    text = canonical_json(value)
    assert re.fullmatch(r"-?\d+\.\d{6}", text)
    assert abs(float(text) - value) <= 5e-7 + abs(value) * 1e-15
