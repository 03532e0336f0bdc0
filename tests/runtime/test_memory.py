"""Freed memory goes back to the OS: on glibc the C heap's `malloc_trim` is found in the
process's own symbols (no subprocess), and releasing is safe to call at any time."""

from __future__ import annotations

import platform

import pyarrow as pa

from chartly_dagster.runtime.memory import _malloc_trim, release_freed_memory


def test_the_heap_trim_is_found_on_glibc_and_releasing_keeps_live_data() -> None:
    # found exactly where the C library has it (glibc), absent elsewhere (musl, macOS)
    assert (_malloc_trim() is not None) == (platform.libc_ver()[0] == "glibc")
    live = pa.array(list(range(100_000)))
    garbage = [pa.array(list(range(10_000))) for _ in range(20)]
    del garbage
    release_freed_memory()
    release_freed_memory()  # idempotent
    assert live.to_pylist()[-1] == 99_999  # what is still referenced is untouched
