"""Parquet sink that commits each file atomically, so a crash never leaves a readable partial file.

Files land in `OUTPUT/scan_id=<id>/part-<digest>.parquet`. Local files are
written under a hidden `.partial` name and renamed; on object stores the
upload is completed only after the whole file was written, and a write that
fails part-way aborts its multipart upload, so nothing (not even a truncated
object) is published. The file name is a digest of the URIs
it holds, so a retried write task overwrites its own file instead of
duplicating rows.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink

from pipeline import schema
from pipeline.storage import Location, filesystem_for

logger = logging.getLogger("forgescan")
# Multipart part size for committed files (S3's minimum): big files upload in parts while they are written.
UPLOAD_PART_BYTES = 5 * 2**20


def scan_directory(output: Location, scan_id: str) -> Location:
    return output.child(f"{schema.SCAN_ID}={scan_id}")


def write_table_atomically(table, location: Location, endpoint_url: str | None, storage_options_json: str,
                           table_schema: pa.Schema | None = None) -> None:
    """Publish `table` (a pyarrow Table, or record batches of `table_schema` written as they come) whole or not at all."""
    if location.protocol == "file":
        directory, name = os.path.split(location.path)
        os.makedirs(directory, exist_ok=True)
        staging = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            _write_parquet(table, staging, table_schema)
        except BaseException:
            if os.path.exists(staging):
                os.remove(staging)
            raise
        os.replace(staging, location.path)
        return
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
    handle = fs.open(location.path, "wb", block_size=UPLOAD_PART_BYTES)
    try:
        # pyarrow closes the stream it writes to even when it fails, and closing an fsspec file
        # completes its upload: it writes through a wrapper whose close does not commit.
        _write_parquet(table, _UncommittedStream(handle), table_schema)
        handle.close()  # completes the upload: the object appears only now
    except BaseException:
        _abandon_upload(handle, location)
        raise


def _write_parquet(data, where, table_schema: pa.Schema | None) -> None:
    if isinstance(data, pa.Table):
        pq.write_table(data, where, compression="zstd")
        return
    with pq.ParquetWriter(where, table_schema, compression="zstd") as writer:
        for batch in data:
            writer.write_batch(batch)


class _UncommittedStream(io.RawIOBase):
    """A writable view of an upload whose `close` does not complete it."""

    def __init__(self, target):
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.target.tell()


def _abandon_upload(handle, location: Location) -> None:
    """Abort the multipart upload of a failed write, so no part of it is ever published."""
    try:
        handle.discard()
    except Exception as error:  # the store's lifecycle rules expire an unfinished upload anyway
        logger.warning("could not abort the upload of %s (%s); it was never completed, so nothing was published",
                       location.uri, type(error).__name__)
    finally:
        handle.closed = True


class CommittedParquetSink(Datasink):
    """Writes output-schema rows of one scan; returns the committed file and its row count per task."""

    def __init__(self, output: Location, scan_id: str, endpoint_url: str | None, storage_options_json: str,
                 rows_per_file: int):
        self.directory = scan_directory(output, scan_id)
        self.endpoint_url = endpoint_url
        self.storage_options_json = storage_options_json
        self.rows_per_file = rows_per_file

    def get_name(self) -> str:
        return "CommitParquet"

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> list[dict]:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        tables = [t.select(schema.OUTPUT_COLUMNS).cast(schema.OUTPUT_SCHEMA) for t in tables if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables)
        digest = hashlib.sha256("\n".join(sorted(table.column(schema.URI).to_pylist())).encode()).hexdigest()[:24]
        location = self.directory.child(f"part-{digest}.parquet")
        write_table_atomically(table, location, self.endpoint_url, self.storage_options_json)
        return [{"file": location.uri, "rows": table.num_rows}]
