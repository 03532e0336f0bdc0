"""A page's canonical JSON comes from one orjson call split at boundary values; it must be
byte for byte what dumping each record alone gives, whatever the records hold, including
the boundary value itself (then the page is dumped record by record)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartly_dagster.runtime.envelope.builder import _BOUNDARY, _canonical_json
from chartly_dagster.runtime.errors import UnsupportedRecord


def _alone(records: list[Any]) -> list[bytes]:
    return [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records]


#: text that likes the boundary's pieces: NULs, quotes, backslashes, commas, the word
TRICKY = st.lists(st.sampled_from(['\x00', '"', '\\', ',', 'chartly-record-boundary', 'a',
                                   'é', '\u2028', _BOUNDARY]), max_size=6).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(JSON, max_size=8))
def test_a_page_splits_into_each_records_own_json(records: list[Any]) -> None:
    assert _canonical_json(records, [str(i) for i in range(len(records))]) == _alone(records)


@pytest.mark.parametrize("records", [
    [_BOUNDARY],  # a record that is the boundary
    [1, _BOUNDARY, 2],
    [{"k": [1, _BOUNDARY, 2]}, {"j": 1}],  # the separator's exact bytes inside a record
    [{_BOUNDARY: _BOUNDARY}],
    ['"' + _BOUNDARY, "x"],  # the boundary's bytes after an escaped quote
    [],
])
def test_records_holding_the_boundary_are_dumped_one_by_one(records: list[Any]) -> None:
    assert _canonical_json(records, [str(i) for i in range(len(records))]) == _alone(records)


def test_a_record_orjson_refuses_is_named() -> None:
    records: list[Any] = [{"ok": 1}, {"n": 2**64}, {"ok": 3}]
    with pytest.raises(UnsupportedRecord, match="record 'b'"):
        _canonical_json(records, ["a", "b", "c"])
