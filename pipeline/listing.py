"""A Ray Data source that streams the archive listing, page by page, from a worker.

The driver never holds the listing: one read task pages through the store and
yields small blocks of objects, which Ray streams into the fetch stage.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.schema import LISTING_SCHEMA
from pipeline.storage import LISTING_PAGE_SIZE, iter_listing


class ArchiveListing(Datasource):
    """Lists every object under a source (or every URI in a manifest) as rows."""

    def __init__(self, source: str, endpoint_url: str | None, storage_options: dict | None, *, block_rows: int,
                 page_size: int = LISTING_PAGE_SIZE, extensions: tuple[str, ...] = (), exclude: str | None = None):
        self.source = source
        self.endpoint_url = endpoint_url
        self.storage_options = storage_options or {}
        self.page_size = page_size
        self.extensions = tuple(extensions)
        self.block_rows = block_rows
        self.exclude = exclude  # the scan's own output, never listed when it lies inside the source

    def get_name(self) -> str:
        return "ListArchive"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        source, endpoint_url, options = self.source, self.endpoint_url, self.storage_options
        page_size, extensions, block_rows, exclude = self.page_size, self.extensions, self.block_rows, self.exclude

        def list_pages() -> Iterator[pa.Table]:
            # Blocks of `block_rows` objects: big enough that Ray's per-block cost is negligible,
            # small enough that fetch/decode tasks stream and spread over the cluster.
            for page in iter_listing(source, endpoint_url, options, page_size=page_size, extensions=extensions,
                                     exclude=exclude):
                for start in range(0, len(page), block_rows):
                    yield pa.Table.from_pylist(page[start : start + block_rows], schema=LISTING_SCHEMA)

        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(list_pages, metadata, schema=LISTING_SCHEMA, per_task_row_limit=per_task_row_limit)]
