"""Window storage: pages staged durably as Arrow IPC, then one Parquet file per window.

Staging makes a window resumable after its last completed page; the final file appears
only by an atomic rename, so a failed window never leaves a half-written Parquet file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .envelope_arrow import ENVELOPE_ARROW_SCHEMA, ContentHasher

ROW_GROUP_ROWS = 64 * 1024


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
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)

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


def write_window_file(staging: PageStaging, destination: str, relative: str,
                      check: Callable[[pa.Table], None] | None = None) -> tuple[str, str, int]:
    """Merge staged pages into one Parquet file; returns (uri, content hash, bytes).

    `check` sees each row group before it is written and may raise to abandon the file.
    """
    fs, root = filesystem_for(destination)
    final = f"{root.rstrip('/')}/{relative}"
    parent = final.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{final.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
    hasher = ContentHasher()
    pending: list[pa.RecordBatch] = []
    rows = 0
    try:
        with fs.open_output_stream(tmp) as sink, pq.ParquetWriter(
                sink, ENVELOPE_ARROW_SCHEMA, compression="zstd", compression_level=1,
                write_statistics=["occurred_at", "sequence", "event_id"]) as writer:
            for batch in staging.batches():
                hasher.update(batch)
                pending.append(batch)
                rows += batch.num_rows
                if rows >= ROW_GROUP_ROWS:
                    _write_group(writer, pending, check)
                    pending, rows = [], 0
            if pending:
                _write_group(writer, pending, check)
        fs.move(tmp, final)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (OSError, FileNotFoundError):
            pass
        raise
    size = fs.get_file_info(final).size or 0
    if "://" not in destination or destination.startswith("file://"):
        uri = Path(final).as_uri()
    else:
        uri = f"{destination.split('://', 1)[0]}://{final.split('://', 1)[-1].lstrip('/')}"
    return uri, hasher.hexdigest(), size


def _write_group(writer: pq.ParquetWriter, batches: list[pa.RecordBatch],
                 check: Callable[[pa.Table], None] | None) -> None:
    table = pa.Table.from_batches(batches, ENVELOPE_ARROW_SCHEMA)
    if check is not None:
        check(table)
    writer.write_table(table)


def read_window_file(uri: str) -> pa.Table:
    fs, path = filesystem_for(uri)
    return pq.read_table(path, filesystem=fs)
