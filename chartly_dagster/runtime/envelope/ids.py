"""Event ids as 64-bit keys, and the exact duplicate-id index built on them."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from .schema import string_offsets


class IdSet:
    """Exact-membership set of 64-bit id keys in sorted numpy runs: ~8 bytes per id.

    A Python set of ids costs ~60-90 bytes each; a long window would grow memory by
    hundreds of MB just to notice a duplicate. Exact detection needs one key per record,
    so this is the one piece of window state that grows: 8 MB per million records.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self.size = 0

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Add `keys`; returns a mask of keys already present (earlier or within `keys`)."""
        # Sorted needles make searchsorted walk each run in order instead of jumping
        # around a large array: several times faster once the set outgrows the CPU cache.
        order = np.argsort(keys, kind="stable")
        needles = keys[order]
        seen_sorted = np.zeros(len(keys), dtype=bool)
        seen_sorted[1:] = needles[1:] == needles[:-1]
        for run in self._runs:
            pos = np.minimum(run.searchsorted(needles), len(run) - 1)
            seen_sorted |= run[pos] == needles
        seen = np.empty(len(keys), dtype=bool)
        seen[order] = seen_sorted
        fresh = needles[~seen_sorted]
        if len(fresh):
            self._runs.append(fresh)
            self.size += len(fresh)
            self._compact()
        return seen

    #: runs this large are never merged again, so a merge's transient copy stays bounded
    FROZEN_RUN = 1 << 21

    def _compact(self) -> None:
        # Merge runs while the newest is at least half the size of the one before it.
        while (len(self._runs) > 1 and len(self._runs[-1]) * 2 >= len(self._runs[-2])
               and len(self._runs[-2]) < self.FROZEN_RUN):
            newest = self._runs.pop()
            # Runs are disjoint and sorted: a stable sort of the two is a linear merge,
            # done in place so the transient copy is one run, not two.
            merged = np.concatenate([self._runs[-1], newest])
            merged.sort(kind="stable")
            self._runs[-1] = merged


_NIBBLES = np.full(256, 255, dtype=np.uint8)
_NIBBLES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def event_id_keys(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The 64-bit id keys (first 16 hex digits after `evt_`) of an event_id column.

    Decoded column-wise from the string buffer; malformed ids (already reported by the
    format rule) fall back to a hash of the whole string so duplicates still count.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n and arr.null_count == 0:
        offsets = string_offsets(arr)
        if bool(np.all(np.diff(offsets) == 36)):
            text = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
            nibbles = _NIBBLES[text.reshape(n, 36)[:, 4:20]]
            if not (nibbles == 255).any():
                keys = np.zeros(n, dtype=np.uint64)
                for k in range(16):
                    keys = (keys << np.uint64(4)) | nibbles[:, k].astype(np.uint64)
                return keys
    return np.fromiter(
        (int(e[4:20], 16) if e and len(e) == 36 and all(c in "0123456789abcdef" for c in e[4:])
         else int.from_bytes(hashlib.sha256((e or "").encode()).digest()[:8], "big")
         for e in arr.to_pylist()), dtype=np.uint64, count=n)
