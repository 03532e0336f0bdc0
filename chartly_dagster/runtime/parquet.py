"""Window storage: pages staged durably as Arrow IPC, then one Parquet file per window.

Staging makes a window resumable after its last completed page; the final file appears
only by an atomic rename, so a failed window never leaves a half-written Parquet file.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .envelope import ENVELOPE_ARROW_SCHEMA, ContentHasher

ROW_GROUP_ROWS = 32 * 1024
# Columns that repeat per window or page. Dictionary-encoding the unique ones (ids, raw,
# hashes) only burns CPU building a dictionary Parquet then abandons.
DICTIONARY_COLUMNS = ("envelope_version", "record_type", "source", "source_instance",
                      "source_ref", "tenant_id", "project_id", "connector_id",
                      "window_start", "window_end", "provenance_uri", "collected_at",
                      "ingested_at")


class PageStaging:
    """One folder per window holding `page-NNNNNN.arrow` files, each written atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def pages(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("page-*.arrow"))

    def reset(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def keep_first(self, count: int) -> None:
        """Drop pages staged after the last checkpointed one (work that was never recorded)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self.pages()[count:]:
            path.unlink()
        for tmp in self.folder.glob("*.tmp"):
            tmp.unlink()

    def stage(self, index: int, batch: pa.RecordBatch) -> None:
        final = self.folder / f"page-{index:06d}.arrow"
        tmp = final.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        os.replace(tmp, final)

    def batches(self) -> Iterator[pa.RecordBatch]:
        for path in self.pages():
            # Read into memory, not a memory map: the batches outlive this file handle
            # (the Parquet writer thread consumes them later).
            with pa.OSFile(str(path), "rb") as source:
                yield from pa.ipc.open_file(source).read_all().to_batches()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def filesystem_for(destination: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local folder or a URL (s3://, gs://, memory://...)."""
    if "://" not in destination:
        return pafs.LocalFileSystem(), str(Path(destination).resolve())
    try:
        return pafs.FileSystem.from_uri(destination)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec  # fsspec-only schemes (memory://, abfs://...) go through its handler

        fs, path = fsspec.core.url_to_fs(destination)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class WindowFileWriter:
    """Writes one window's Parquet file on a background thread while pages are fetched.

    pyarrow and hashlib release the GIL while they encode, compress and hash, so the file
    is built on the core the fetch loop leaves idle. The file is a temp name until
    `commit`; `abort` (or any failure) deletes it, so the final path never holds a partial
    file. `check` sees each row group before it is written and may raise to abandon it.
    """

    _DONE = object()

    def __init__(self, destination: str, relative: str,
                 check: Callable[[pa.Table], None] | None = None) -> None:
        self._destination = destination
        self._fs, root = filesystem_for(destination)
        self._final = f"{root.rstrip('/')}/{relative}"
        parent = self._final.rsplit("/", 1)[0]
        self._fs.create_dir(parent, recursive=True)
        self._tmp = f"{parent}/.{self._final.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        self._check = check
        self._hasher = ContentHasher()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chartly-parquet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending: list[pa.RecordBatch] = []
        rows = 0
        try:
            with self._fs.open_output_stream(self._tmp) as sink, pq.ParquetWriter(
                    sink, ENVELOPE_ARROW_SCHEMA, compression="snappy",
                    use_dictionary=list(DICTIONARY_COLUMNS),
                    write_statistics=["occurred_at", "sequence", "event_id"]) as writer:
                while (batch := self._queue.get()) is not self._DONE:
                    self._hasher.update(batch)
                    pending.append(batch)
                    rows += batch.num_rows
                    if rows >= ROW_GROUP_ROWS:
                        self._write_group(writer, pending)
                        pending, rows = [], 0
                if pending:
                    self._write_group(writer, pending)
        except BaseException as exc:  # handed to the fetching thread by submit/commit
            self._error = exc
            while self._queue.get() is not self._DONE:  # unblock a waiting submit
                pass

    def _write_group(self, writer: pq.ParquetWriter, batches: list[pa.RecordBatch]) -> None:
        table = pa.Table.from_batches(batches, ENVELOPE_ARROW_SCHEMA)
        if self._check is not None:
            self._check(table)
        writer.write_table(table)

    def submit(self, batch: pa.RecordBatch) -> None:
        """Queue one page's envelopes (in order); raises the writer's error, if any."""
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(self._DONE)
            self._thread.join()

    def commit(self) -> tuple[str, str, int]:
        """Finish and move the file into place; returns (uri, content hash, bytes)."""
        self._stop()
        if self._error is not None:
            self.abort()
            raise self._error
        self._fs.move(self._tmp, self._final)
        size = self._fs.get_file_info(self._final).size or 0
        if "://" not in self._destination or self._destination.startswith("file://"):
            uri = Path(self._final).as_uri()
        else:
            scheme = self._destination.split("://", 1)[0]
            uri = f"{scheme}://{self._final.split('://', 1)[-1].lstrip('/')}"
        return uri, self._hasher.hexdigest(), size

    def abort(self) -> None:
        """Stop and delete the temp file; safe to call more than once."""
        self._stop()
        try:
            self._fs.delete_file(self._tmp)
        except (OSError, FileNotFoundError):
            pass


def read_window_file(uri: str) -> pa.Table:
    fs, path = filesystem_for(uri)
    return pq.read_table(path, filesystem=fs)
