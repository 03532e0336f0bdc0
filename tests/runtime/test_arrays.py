"""Arrow arrays built from buffers: the same arrays `pa.array` makes, the same masks
`to_numpy` gives, and None (so callers fall back to `pa.array`) for what they cannot take
exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from chartly_dagster.runtime.arrays import (
    bool_array,
    bools,
    int64_array,
    int64_scalar,
    int64_values,
    repeated_int64,
    repeated_string,
    string_array,
    string_scalar,
    utf8_array,
)
from chartly_dagster.runtime.envelope.schema import TIMESTAMP


@pytest.mark.parametrize("values", [[], ["a"], ["", "é", "x" * 1000, "日本"]])
def test_strings_equal_pa_array(values: list[str]) -> None:
    expected = pa.array(values, pa.string())
    assert string_array(values).equals(expected)
    assert utf8_array([v.encode() for v in values]).equals(expected)


@pytest.mark.parametrize("values", [[1, "a"], ["a", None], ["\ud800"], [b"a"]])
def test_strings_refuse_what_pa_array_must_judge(values: list[object]) -> None:
    assert string_array(values) is None


def test_int64s_equal_pa_array_and_refuse_non_ints() -> None:
    values = [0, -1, 2**63 - 1, -(2**63)]
    assert int64_array(values).equals(pa.array(values, pa.int64()))
    assert int64_array(np.arange(3, dtype=np.int64)).equals(pa.array([0, 1, 2], pa.int64()))
    assert int64_array([1_700_000_000_000_000], TIMESTAMP).equals(
        pa.array([1_700_000_000_000_000], pa.int64()).cast(TIMESTAMP))
    for bad in ([1.0], [True], [None], [2**63], ["1"]):
        assert int64_array(bad) is None, bad


def test_repeated_values_and_scalars() -> None:
    assert repeated_string("abc", 3).equals(pa.array(["abc"] * 3, pa.string()))
    assert repeated_string("", 2).equals(pa.array(["", ""], pa.string()))
    assert repeated_string("x", 0).equals(pa.array([], pa.string()))
    assert repeated_int64(7, 2, TIMESTAMP).equals(pa.array([7, 7], pa.int64()).cast(TIMESTAMP))
    assert int64_scalar(5).equals(pa.scalar(5, pa.int64()))
    assert string_scalar("v").equals(pa.scalar("v", pa.string()))


def test_masks_match_to_numpy_with_offsets_and_nulls() -> None:
    mask = np.array([True, False, True, True, False, False, True, False, True, True])
    arrow = bool_array(mask)
    assert arrow.equals(pa.array(mask))
    assert bools(arrow).tolist() == mask.tolist()
    sliced = arrow.slice(3, 6)  # an offset that is not a byte boundary
    assert bools(sliced).tolist() == mask[3:9].tolist()
    with_nulls = pc.equal(pa.array([1, None, 3, 4]), pa.array([1, 2, 0, 4]))
    assert bools(with_nulls).tolist() == [True, False, False, True]  # null counts as False
    assert bools(pa.array([], pa.bool_())).tolist() == []


def test_int64_values_are_a_view_of_the_slice() -> None:
    column = pa.array(list(range(10)), pa.int64()).slice(4, 3)
    assert int64_values(column).tolist() == [4, 5, 6]
    assert int64_values(column.cast(TIMESTAMP).cast(pa.int64())).tolist() == [4, 5, 6]
    assert int64_values(pa.array([], pa.int64())).tolist() == []
