"""Envelope files are read a row group ahead of their consumer, on a thread: in order,
with a read error raised where it happened, and with the thread gone whenever the
consumer stops, early or not."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chartly_dagster.runtime.storage import _read_ahead, iter_window_batches


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chartly-read-ahead"]


def _table(index: int) -> pa.Table:
    return pa.table({"i": pa.array([index], pa.int64())})


def test_groups_come_in_order_and_the_thread_ends() -> None:
    got = [t.column("i")[0].as_py() for t in _read_ahead(_table, 7)]
    assert got == list(range(7))
    assert _readers() == []


def test_a_read_error_is_raised_after_the_groups_before_it() -> None:
    def read(index: int) -> pa.Table:
        if index == 3:
            raise OSError("disk gone")
        return _table(index)

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for table in _read_ahead(read, 6):
            got.append(table.column("i")[0].as_py())
    assert got == [0, 1, 2]
    assert _readers() == []


def test_a_consumer_that_stops_early_stops_the_reader() -> None:
    reads: list[int] = []

    def read(index: int) -> pa.Table:
        reads.append(index)
        return _table(index)

    tables = _read_ahead(read, 1000, depth=2)
    assert next(tables).column("i")[0].as_py() == 0
    tables.close()  # joins the thread: it was at most depth + 2 groups ahead
    assert _readers() == []
    assert len(reads) <= 4


def test_a_file_read_in_part_leaves_no_reader(tmp_path) -> None:
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"i": pa.array(range(10_000), pa.int64())}), path,
                   row_group_size=1_000)
    whole = [b.num_rows for b in iter_window_batches(str(path), batch_size=1_000)]
    assert whole == [1_000] * 10
    batches = iter_window_batches(str(path), batch_size=1_000)
    assert next(batches).column("i")[0].as_py() == 0
    batches.close()
    assert _readers() == []
