"""The latest state of every object an output has seen, in one compact table: what keeps planning flat.

`OUTPUT/_forgescan/latest_state.pq` (a Parquet file) holds one row per object URI: its
identity (size, ETag, mtime and a 64-bit hash of the four), its latest status,
the kind of its error and whether that error is permanent, the model versions
and the scan that judged it, and the committed file holding that row. It is
folded forward after every complete scan (rewritten atomically, under the
output's lease) and rebuilt from the committed scans when it is absent,
damaged or names a scan that is no longer complete, so older outputs keep
working. A committed file whose size changed since it was folded (truncated,
overwritten) is named in a warning and its rows leave the table, so exactly
its objects are scanned again.

Planning reads only the hash, status and version columns of this table, never
the scans, and hands the scan sorted uint64 arrays; the skip stage fetches
them once per worker process and probes each block with a binary search. The
cost per listed object stays flat however large the archive and however many
scans came before (bench/planning_scale.py measures it).
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.storage import Location

logger = logging.getLogger("forgescan")

# Parquet, but not named *.parquet: analysts read `OUTPUT/scan_id=*/*.parquet` (older recipes: `OUTPUT/**/*.parquet`) with Hive partitioning, and a file
# outside `scan_id=` folders would break that glob (DuckDB: "Hive partition mismatch").
LATEST_STATE_FILE = "_forgescan/latest_state.pq"
METADATA_KEY = b"forgescan.latest_state"
IDENTITY_HASH = "identity_hash"  # 64-bit hash of `uri|size|etag|mtime`: equal hashes mean an unchanged object
ERROR_KIND = "error_kind"  # the error's leading word (`not_an_image`, `read_failed`, ...); null for ok rows
PERMANENT_ERROR = "permanent_error"  # the error is a fact about the bytes: re-reading them cannot help
COMMITTED_FILE = "file"  # the committed Parquet file holding the row, relative to the output
ROW_GROUP_ROWS = 65_536  # rows per row group of the table file, and per batch while folding: bounds fold memory

# Errors that are facts about an object's bytes (or what it is), so reading the same bytes again gives the
# same error: such objects are skipped like `ok` ones until their size, ETag or mtime change. Every other
# error (read_failed: time-outs and throttling, not_found, permission_denied, listing_failed, worker
# failures, kinds not named here) is transient and the object is read again on the next scan. The one place
# this set is defined. `too_large` / `too_small` follow the limits of the scan that judged them (--max-bytes,
# --max-pixels, --min-side): after raising a limit, scan with --full to re-read them.
PERMANENT_ERROR_KINDS = frozenset({
    "empty", "not_an_image", "corrupt", "unsupported", "too_small", "too_large", "not_a_regular_file",
})

LATEST_STATE_SCHEMA = pa.schema([
    pa.field(schema.URI, pa.string(), nullable=False),
    pa.field(schema.SIZE_BYTES, pa.int64()),
    pa.field(schema.ETAG, pa.string()),
    pa.field(schema.MTIME, pa.string()),
    pa.field(IDENTITY_HASH, pa.uint64(), nullable=False),
    pa.field(schema.STATUS, pa.string(), nullable=False),
    pa.field(ERROR_KIND, pa.string()),
    pa.field(PERMANENT_ERROR, pa.bool_(), nullable=False),
    pa.field(schema.CLASSIFIER_VERSION, pa.string()),
    pa.field(schema.SEGMENTER_VERSION, pa.string()),
    pa.field(schema.SCAN_ID, pa.string(), nullable=False),
    pa.field(schema.SCANNED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field(COMMITTED_FILE, pa.string()),
])
# What planning reads: 8 bytes of hash per object plus dictionary-encoded status and versions.
PLANNING_COLUMNS = [IDENTITY_HASH, schema.STATUS, PERMANENT_ERROR, schema.CLASSIFIER_VERSION, schema.SEGMENTER_VERSION]
_SCAN_COLUMNS = [schema.URI, schema.SIZE_BYTES, schema.ETAG, schema.MTIME, schema.STATUS, schema.ERROR,
                 schema.CLASSIFIER_VERSION, schema.SEGMENTER_VERSION, schema.SCANNED_AT]


def identity_key(uris, sizes, etags, mtimes) -> pa.Array:
    """`uri|size|etag|mtime` as one string per object: equal keys mean an unchanged object."""
    def text(values):
        values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        return pc.fill_null(pc.cast(values, pa.string()), "")
    return pc.binary_join_element_wise(text(uris), text(sizes), text(etags), text(mtimes), "|")


def string_hashes(values) -> np.ndarray:
    """A 64-bit hash per string (pandas' SipHash with its fixed key: the same in every process and run).

    Two different keys share a hash with probability about 2^-64 per pair: at ten million
    earlier objects, one wrongly skipped object in ~10^12 scans of that archive.
    """
    import pandas

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.string())
    if len(values) == 0:
        return np.empty(0, dtype=np.uint64)
    return pandas.util.hash_array(np.asarray(values.to_numpy(zero_copy_only=False), dtype=object), categorize=False)


def identity_hashes(uris, sizes, etags, mtimes) -> np.ndarray:
    return string_hashes(identity_key(uris, sizes, etags, mtimes))


def contains(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Which of `hashes` are in `sorted_hashes` (a binary search each: no hash table is built)."""
    if len(sorted_hashes) == 0 or len(hashes) == 0:
        return np.zeros(len(hashes), dtype=bool)
    index = np.minimum(np.searchsorted(sorted_hashes, hashes), len(sorted_hashes) - 1)
    return sorted_hashes[index] == hashes


def error_kinds(errors: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The leading word of each error (`not_an_image: ...` -> `not_an_image`); null where there is none."""
    if isinstance(errors, pa.ChunkedArray):
        errors = errors.combine_chunks()
    errors = pc.cast(errors, pa.string())
    if len(errors) == 0:
        return pa.array([], pa.string())
    return pc.list_element(pc.split_pattern(errors, ":", max_splits=1), 0)


def is_permanent(kinds: pa.Array) -> pa.Array:
    return pc.fill_null(pc.is_in(kinds, value_set=pa.array(sorted(PERMANENT_ERROR_KINDS), pa.string())), False)


class LatestStateTable:
    """The latest-state table of one output: read for planning, folded forward after each scan."""

    def __init__(self, state):
        self.state = state  # pipeline.state.ScanState: its filesystem, output and damaged-file notes
        self.location: Location = state.output.child(LATEST_STATE_FILE)
        self.filesystem = None if self.location.protocol == "file" else state.fs

    def current(self, complete_scan_ids: list[str], columns: list[str] | None = None) -> pa.Table:
        """The table for these complete scans, brought up to date first (and rewritten when that changed it).

        Nothing is rewritten in the common case: planning after a scan that folded itself
        reads `columns` and no more. Folding streams the table from its file in record
        batches: the driver holds the new scans' rows and one batch, not the table.
        """
        complete = list(dict.fromkeys(complete_scan_ids))
        recorded = self._read_record()
        if recorded is None or not set(recorded["folded_scans"]) <= set(complete):
            folded, files, reusable = [], {}, False  # absent, damaged, or a folded scan is no longer complete
        else:
            folded, files, reusable = recorded["folded_scans"], recorded["files"], True
        committed = self._committed_file_sizes()
        changed = sorted(name for name, size in files.items() if committed.get(name) != size)
        for name in changed:
            self._note_changed_file(name, present=name in committed)
        unfolded = [scan_id for scan_id in complete if scan_id not in folded]
        if reusable and not changed and not unfolded:
            return self._read(columns)
        newer = self._rows_of_scans(unfolded) if unfolded else self._empty()
        files = {name: size for name, size in files.items() if name not in changed}
        for name in set(newer.column(COMMITTED_FILE).to_pylist()):
            if name in committed:
                files[name] = committed[name]
        older = self._batches() if reusable else iter(())
        self._write(fold(older, newer, changed), [*folded, *unfolded], files)
        return self._read(columns)

    def _batches(self, batch_rows: int = ROW_GROUP_ROWS):
        """The table's rows as record batches, read from its file one at a time."""
        opened = open(self.location.path, "rb") if self.filesystem is None else self.filesystem.open(self.location.path, "rb")
        with opened as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows)

    def _empty(self) -> pa.Table:
        return LATEST_STATE_SCHEMA.empty_table()

    def _read_record(self) -> dict | None:
        try:
            metadata = pq.read_schema(self.location.path, filesystem=self.filesystem).metadata or {}
            record = json.loads(metadata[METADATA_KEY])
            return {"folded_scans": list(record["folded_scans"]), "files": dict(record["files"])}
        except FileNotFoundError:
            return None
        except (pa.ArrowInvalid, OSError, KeyError, ValueError, TypeError) as error:
            logger.warning("latest-state table %s is unreadable (%s); it is rebuilt from the committed scans",
                           self.location.uri, type(error).__name__)
            return None

    def _read(self, columns: list[str] | None) -> pa.Table:
        try:
            table = pq.read_table(self.location.path, filesystem=self.filesystem, columns=columns,
                                  read_dictionary=[c for c in (schema.STATUS, schema.CLASSIFIER_VERSION,
                                                               schema.SEGMENTER_VERSION, ERROR_KIND)
                                                   if columns is None or c in columns])
        except FileNotFoundError:
            table = self._empty()
        wanted = LATEST_STATE_SCHEMA if columns is None else pa.schema([LATEST_STATE_SCHEMA.field(c) for c in columns])
        return table.cast(wanted) if columns is None else table

    def _committed_file_sizes(self) -> dict[str, int]:
        """`scan_id=<id>/part-*.parquet` -> bytes, for every committed file of the output (one listing)."""
        base = self.state.output.path.rstrip("/")
        try:
            found = self.state.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        sizes = {}
        for path, info in found.items():
            relative = path[len(base):].lstrip("/") if path.startswith(base) else path
            parts = relative.split("/")
            if path.endswith(".parquet") and parts[0].startswith(f"{schema.SCAN_ID}=") and \
                    not any(part.startswith((".", "_")) for part in parts):
                sizes[relative] = int(info.get("size") or 0)
        return sizes

    def _note_changed_file(self, name: str, present: bool) -> None:
        if not present:
            return  # deleted (as the warning for a damaged file advises): its objects are simply scanned again
        path = f"{self.state.output.path.rstrip('/')}/{name}"
        uri = path if self.location.protocol == "file" else f"{self.location.protocol}://{path}"
        if uri not in self.state.unreadable_files:
            message = (f"committed file {uri} changed size since its scan finished (truncated or damaged); it is "
                       "left out and the objects it held count as not scanned, so the next scan processes them "
                       "again. Delete the file once that scan has run.")
            self.state.unreadable_files[uri] = message
            logger.warning(message)

    def _rows_of_scans(self, scan_ids: list[str]) -> pa.Table:
        """The state columns of these scans' committed rows (damaged files named and left out)."""
        from pipeline.sink import scan_directory
        from pipeline.state import open_committed_dataset

        tables = []
        for scan_id in scan_ids:
            directory = scan_directory(self.state.output, scan_id)
            dataset = open_committed_dataset(self.state.fs, directory, self.state.unreadable_files)
            if dataset is None:
                continue
            present = [c for c in _SCAN_COLUMNS if c in dataset.schema.names]
            rows = dataset.to_table(columns=[*present, "__filename"])
            base = re.escape(self.state.output.path.strip("/"))
            names = pc.replace_substring_regex(rows.column("__filename"), f"^/?{base}/", "")
            kinds = error_kinds(rows.column(schema.ERROR))
            tables.append(pa.table({
                schema.URI: rows.column(schema.URI),
                schema.SIZE_BYTES: rows.column(schema.SIZE_BYTES),
                schema.ETAG: rows.column(schema.ETAG),
                schema.MTIME: rows.column(schema.MTIME),
                IDENTITY_HASH: identity_hashes(rows.column(schema.URI), rows.column(schema.SIZE_BYTES),
                                               rows.column(schema.ETAG), rows.column(schema.MTIME)),
                schema.STATUS: rows.column(schema.STATUS),
                ERROR_KIND: kinds,
                PERMANENT_ERROR: pc.and_(pc.equal(rows.column(schema.STATUS), schema.STATUS_ERROR), is_permanent(kinds)),
                schema.CLASSIFIER_VERSION: rows.column(schema.CLASSIFIER_VERSION),
                schema.SEGMENTER_VERSION: rows.column(schema.SEGMENTER_VERSION),
                schema.SCAN_ID: pa.array([scan_id] * rows.num_rows, pa.string()),
                schema.SCANNED_AT: rows.column(schema.SCANNED_AT),
                COMMITTED_FILE: names,
            }).cast(LATEST_STATE_SCHEMA))
        return pa.concat_tables(tables) if tables else self._empty()

    def _write(self, batches, folded: list[str], files: dict[str, int]) -> None:
        from pipeline.sink import write_table_atomically

        record = json.dumps({"format": 1, "folded_scans": folded, "files": files}, sort_keys=True)
        table_schema = LATEST_STATE_SCHEMA.with_metadata({METADATA_KEY: record.encode()})
        row_groups = (piece.cast(table_schema) for batch in batches
                      for piece in pa.Table.from_batches([batch]).to_batches(max_chunksize=ROW_GROUP_ROWS))
        write_table_atomically(row_groups, self.location,
                               self.state.endpoint_url, self.state.options_json, table_schema=table_schema)


def fold(older, newer: pa.Table, changed_files: list[str]):
    """The folded table as record batches: `older` (batches of the table) with `newer` (the rows of newly
    complete scans) folded in, one row per URI, the latest by scan time as `latest_per_object` picks it;
    rows held by `changed_files` leave. Older rows of URIs the new scans did not see stream through
    untouched; those they did see are set aside (no more than `newer` has rows) and settled at the end.
    """
    changed = pa.array(changed_files, pa.string())
    newer_uris = pc.unique(newer.column(schema.URI)) if newer.num_rows else pa.array([], pa.string())
    contested = []
    for batch in older:
        if len(changed):
            batch = batch.filter(pc.invert(pc.fill_null(pc.is_in(batch.column(COMMITTED_FILE), value_set=changed), False)))
        if len(newer_uris) and batch.num_rows:
            seen = pc.is_in(batch.column(schema.URI), value_set=newer_uris)
            contested.append(pa.Table.from_batches([batch.filter(seen)]))
            batch = batch.filter(pc.invert(seen))
        if batch.num_rows:
            yield batch
    settled = latest_per_object(pa.concat_tables(contested).cast(LATEST_STATE_SCHEMA) if contested
                                else LATEST_STATE_SCHEMA.empty_table(), newer)
    yield from settled.to_batches()


def latest_per_object(older: pa.Table, newer: pa.Table) -> pa.Table:
    """One row per URI: the latest by scan time (then scan id), as `report`'s archive view picks it."""
    import duckdb

    if newer.num_rows == 0:
        return older.cast(LATEST_STATE_SCHEMA)
    connection = duckdb.connect()
    connection.register("older", older.cast(LATEST_STATE_SCHEMA))
    connection.register("newer", newer.cast(LATEST_STATE_SCHEMA))
    merged = connection.sql(
        f"SELECT * FROM (SELECT * FROM older UNION ALL SELECT * FROM newer) QUALIFY row_number() OVER "
        f"(PARTITION BY {schema.URI} ORDER BY {schema.SCANNED_AT} DESC, {schema.SCAN_ID} DESC) = 1").to_arrow_table()
    connection.close()
    return merged.cast(LATEST_STATE_SCHEMA)
