"""The content hash of a window file: the same digest page by page or read back whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from ..arrays import int64_values
from .schema import HASHED_FIELDS, string_offsets


class ContentHasher:
    """SHA-256 over the hashed columns, independent of how rows are split into batches.

    Each column feeds its own hasher (values and lengths as raw buffers, no per-row Python),
    so a window hashed page by page equals the same file hashed after reading it back.
    """

    def __init__(self) -> None:
        self._hashers = {name: (hashlib.sha256(), hashlib.sha256()) for name in HASHED_FIELDS}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name in HASHED_FIELDS:
            values, lengths = self._hashers[name]
            for chunk in _chunks(batch.column(name)):
                if pa.types.is_string(chunk.type):
                    offsets = string_offsets(chunk)
                    data = chunk.buffers()[2]
                    if data is not None and len(chunk):
                        values.update(memoryview(data)[offsets[0]:offsets[-1]])
                    lengths.update(np.diff(offsets).astype(">i8").tobytes())
                else:
                    values.update(int64_values(chunk.cast(pa.int64())).astype(">i8").tobytes())

    def hexdigest(self) -> str:
        outer = hashlib.sha256()
        for name in HASHED_FIELDS:
            values, lengths = self._hashers[name]
            outer.update(f"{name}:{values.hexdigest()}:{lengths.hexdigest()}\n".encode())
        return "sha256:" + outer.hexdigest()


def _chunks(column: pa.Array | pa.ChunkedArray) -> Iterable[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def content_hash(table: pa.Table) -> str:
    """Recompute a file's content hash (wall-clock fields excluded) from its table."""
    hasher = ContentHasher()
    hasher.update(table)
    return hasher.hexdigest()
