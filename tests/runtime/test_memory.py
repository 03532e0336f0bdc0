"""Freed memory goes back to the OS: on glibc the C heap's `malloc_trim` is found in the
process's own symbols (no subprocess), and releasing is safe to call at any time."""

from __future__ import annotations

import platform

import pyarrow as pa
import pytest

from chartly_dagster.runtime.memory import _malloc_trim, release_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_heap_trim_is_found_and_releasing_keeps_live_data() -> None:
    assert _malloc_trim() is not None
    live = pa.array(list(range(100_000)))
    garbage = [pa.array(list(range(10_000))) for _ in range(20)]
    del garbage
    release_freed_memory()
    release_freed_memory()  # idempotent
    assert live.to_pylist()[-1] == 99_999  # what is still referenced is untouched
