"""Parquet sink that commits each file atomically, so a crash never leaves a readable partial file.

Files land in `OUTPUT/scan_id=<id>/part-<digest>.parquet`. Local files are
written under a hidden `.partial` name and renamed; object stores publish an
object only when its upload completes. The file name is a digest of the URIs
it holds, so a retried write task overwrites its own file instead of
duplicating rows.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink

from pipeline import schema
from pipeline.storage import Location, filesystem_for


def scan_directory(output: Location, scan_id: str) -> Location:
    return output.child(f"{schema.SCAN_ID}={scan_id}")


def write_table_atomically(table: pa.Table, location: Location, endpoint_url: str | None, storage_options_json: str) -> None:
    if location.protocol == "file":
        directory, name = os.path.split(location.path)
        os.makedirs(directory, exist_ok=True)
        staging = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.partial")
        pq.write_table(table, staging, compression="zstd")
        os.replace(staging, location.path)
        return
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
    with fs.open(location.path, "wb") as handle:  # the object appears only when the upload completes
        pq.write_table(table, handle, compression="zstd")


class CommittedParquetSink(Datasink):
    """Writes output-schema rows of one scan; returns the committed file and its row count per task."""

    def __init__(self, output: Location, scan_id: str, endpoint_url: str | None, storage_options_json: str,
                 rows_per_file: int = 512):
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
