"""Arrow arrays built from buffers, for the paths every window and every check takes.

`pa.array` and `pa.scalar` ask pyarrow's pandas shim whether their argument is a pandas
object, and the first such question imports pandas: about 40 MB of resident memory in a
process that never uses pandas (a fetch, a check step; measured on one 1,000,000-record
window through Dagster: peak 286 MB with the import, 255 MB without). These constructors
make the same arrays from buffers; values they cannot take exactly (a float where an
integer is due, an integer beyond int64, a non-string) return None so the caller falls back
to `pa.array` and keeps its exact errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

INT64 = pa.int64()


def _buffer(values: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.ascontiguousarray(values))


def _string_column(n: int, lengths: Iterable[int], data: bytes) -> pa.StringArray | None:
    """n strings of `lengths` bytes laid end to end in `data`; None past 32-bit offsets."""
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(lengths, dtype=np.int64, count=n), out=offsets[1:])
    if offsets[-1] >= 2**31:
        return None
    return pa.StringArray.from_buffers(n, _buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(data))


def utf8_array(values: Sequence[bytes]) -> pa.Array:
    """UTF-8 byte strings as one string column, joined without per-item copies."""
    column = _string_column(len(values), map(len, values), b"".join(values))
    if column is None:  # beyond 32-bit offsets: pyarrow splits it into chunks
        return pa.array(values, pa.binary()).view(pa.string())
    return column


def string_array(values: Sequence[Any]) -> pa.Array | None:
    """Python `str` values as a string column; None if any value is not a `str` (or cannot
    be UTF-8: a lone surrogate)."""
    if not set(map(type, values)) <= {str}:
        return None
    try:
        text = "".join(values)
        data = text.encode()
    except UnicodeEncodeError:
        return None
    if len(data) == len(text):  # all ASCII: lengths in chars are lengths in bytes
        column = _string_column(len(values), map(len, values), data)
        if column is not None:
            return column
    return utf8_array([v.encode() for v in values])


def int64_array(values: Sequence[Any] | np.ndarray,
                typ: pa.DataType = INT64) -> pa.Array | None:
    """Python `int`s (or an int64 ndarray) as a 64-bit column of `typ` (int64, or a
    timestamp in its unit); None if any value is not an `int` in int64's range."""
    if not isinstance(values, np.ndarray):
        if not set(map(type, values)) <= {int}:
            return None
        try:
            values = np.fromiter(values, dtype=np.int64, count=len(values))
        except OverflowError:
            return None
    return pa.Array.from_buffers(typ, len(values), [None, _buffer(values.astype(np.int64))])


def bool_array(values: np.ndarray) -> pa.BooleanArray:
    """A numpy bool mask as an Arrow boolean column."""
    bits = np.packbits(values.astype(bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def repeated_string(value: str, n: int) -> pa.StringArray:
    """`value` n times."""
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, _buffer(offsets), pa.py_buffer(data * n))


def repeated_int64(value: int, n: int, typ: pa.DataType = INT64) -> pa.Array:
    """`value` n times as a 64-bit column of `typ`."""
    return pa.Array.from_buffers(typ, n, [None, _buffer(np.full(n, value, dtype=np.int64))])


def int64_scalar(value: int, typ: pa.DataType = INT64) -> pa.Scalar:
    """An Arrow scalar for compute functions (a Python int there goes through `pa.scalar`)."""
    return repeated_int64(value, 1, typ)[0]


def string_scalar(value: str) -> pa.Scalar:
    """An Arrow string scalar for compute functions."""
    return repeated_string(value, 1)[0]


def _bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little",
                         count=offset + n)[offset:].astype(bool)


def bools(array: pa.Array) -> np.ndarray:
    """A boolean column as a numpy mask (`to_numpy` would import pandas); null is False."""
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=bool)
    validity, data = array.buffers()
    mask = _bits(data, array.offset, n)
    if validity is not None and array.null_count:
        mask &= _bits(validity, array.offset, n)
    return mask


def int64_values(array: pa.Array) -> np.ndarray:
    """A 64-bit column's values (int64, or a timestamp's ticks) as a read-only numpy view;
    null slots hold whatever the buffer has, so callers check nulls themselves."""
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array),
                         offset=array.offset * 8)
