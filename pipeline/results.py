"""Reading a scan output for people: counts, histograms and top-k selections pushed down to Parquet.

The committed files are opened as one pyarrow dataset (local or object store,
through the same fsspec filesystems the scan used) and queried with DuckDB,
which pushes projections and filters into the Parquet scan and keeps only the
top rows of an `ORDER BY ... LIMIT`: a report of ten million rows reads the
score columns, never the whole table, and decodes masks only for the rows it
shows.

Two views of an output:
- `archive` (the default): the current state of the archive, i.e. the latest
  row per object across all complete scans. After an incremental nightly scan
  this still covers every object, not only the handful that changed.
- `scan`: the rows of one scan (`--scan-id`, or the latest complete scan).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from forensics.masks import decode_mask
from forensics.verdict import AI_GENERATED, MANIPULATED
from pipeline import schema
from pipeline.state import COMPLETE, ScanManifest, ScanState, open_committed_dataset
from pipeline.storage import StorageError, check_reachable, describe_storage_error, parse_location, storage_options_key

ARCHIVE_VIEW = "archive"
SCAN_VIEW = "scan"
VIEWS = (ARCHIVE_VIEW, SCAN_VIEW)
FLAGGED_VERDICTS = (AI_GENERATED, MANIPULATED)
HISTOGRAM_BINS = 20
# The score a finding is ranked by: the larger of its two image-level scores.
SUSPICION_SQL = f"greatest(coalesce({schema.AI_SCORE}, 0), coalesce({schema.MANIPULATION_SCORE}, 0))"
# What counts, histograms and the top-k need: small columns, held once per selection in a DuckDB temp table.
SELECTION_COLUMNS = (schema.SCAN_ID, schema.URI, schema.STATUS, schema.VERDICT, schema.ERROR, schema.AI_SCORE,
                     schema.MANIPULATION_SCORE)
# Columns a report shows for each selected row, when the output has them (newer columns may be absent).
ROW_COLUMNS = (schema.SCAN_ID, schema.URI, schema.VERDICT, schema.AI_SCORE, schema.MANIPULATION_SCORE,
               schema.CONFIDENCE, schema.MASK_AREA, schema.MASK_BBOX, schema.WIDTH, schema.HEIGHT, schema.FORMAT,
               schema.SIZE_BYTES, schema.SHA256, schema.CLASSIFIER_VERSION, schema.SEGMENTER_VERSION,
               schema.SCANNED_AT, schema.ANALYSIS, "dominant_type", "manipulation_type", "reasons")


class ResultsError(RuntimeError):
    """The output cannot be read as asked; the message names the output and the fix."""


@dataclass(frozen=True)
class Selection:
    """Which rows a report or summary describes."""

    view: str
    scan_ids: tuple[str, ...]  # the complete scans whose rows are considered
    description: str


@dataclass
class Counts:
    rows: int = 0
    objects: int = 0
    ok: int = 0
    errors: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def flagged(self) -> int:
        return sum(self.verdicts.get(v, 0) for v in FLAGGED_VERDICTS)

    def add(self, status: str, verdict: str, error_kind: str | None, rows: int) -> None:
        """Count `rows` rows of one (status, verdict, error kind) group."""
        self.rows += rows
        if status == schema.STATUS_OK:
            self.ok += rows
        else:
            self.errors += rows
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + rows
        if error_kind:
            self.error_kinds[error_kind] = self.error_kinds.get(error_kind, 0) + rows

    def put_in_order(self) -> None:
        """Verdicts by name, error kinds most frequent first, as the report lists them."""
        self.verdicts = dict(sorted(self.verdicts.items()))
        self.error_kinds = dict(sorted(self.error_kinds.items(), key=lambda item: (-item[1], item[0])))


def _is_rle(arrow_type: pa.DataType) -> bool:
    return pa.types.is_struct(arrow_type) and {"size", "counts"} <= {f.name for f in arrow_type}


def class_mask_column(arrow_schema: pa.Schema) -> str | None:
    """The per-class mask column (a list of structs each carrying a COCO RLE), if this output has one."""
    for column in arrow_schema:
        if column.name == schema.MASK_RLE or not pa.types.is_list(column.type):
            continue
        item = column.type.value_type
        if _is_rle(item) or (pa.types.is_struct(item) and any(_is_rle(f.type) for f in item)):
            return column.name
    return None


def decode_class_masks(entries: list[dict] | None) -> list[tuple[str, np.ndarray, float | None]]:
    """(type name, mask, area) per entry of a per-class mask column, whatever its exact field names."""
    found = []
    for entry in entries or []:
        rle = entry.get("rle") or entry.get("mask_rle") or (entry if "counts" in entry else None)
        if not rle or rle.get("counts") is None:
            continue
        name = entry.get("name") or entry.get("class_name") or entry.get("label") or f"class {entry.get('class_id', '?')}"
        found.append((str(name), decode_mask(rle), entry.get("area")))
    return found


class ScanResults:
    """One output prefix: its manifests, and DuckDB queries over its committed Parquet files."""

    def __init__(self, output: str, endpoint_url: str | None = None, storage_options: dict | None = None):
        self.location = parse_location(output)
        check_reachable(self.location, endpoint_url, storage_options_key(storage_options))
        try:
            self.state = ScanState(self.location, endpoint_url, storage_options)
            self.manifests: list[ScanManifest] = self.state.manifests()
            self.dataset = self._open_dataset()
        except StorageError:
            raise
        except Exception as error:  # noqa: BLE001 - credentials, endpoint, bucket: one message with the fix
            raise StorageError(describe_storage_error(self.location, error, endpoint_url)) from None
        self.columns = set(self.dataset.schema.names) if self.dataset is not None else set(schema.OUTPUT_COLUMNS)
        self.connection = duckdb.connect()
        self._selection_tables: dict[Selection, str] = {}
        if self.dataset is not None:
            self.connection.register("results", self.dataset)
        else:
            self.connection.register("results", schema.OUTPUT_SCHEMA.empty_table())

    def _open_dataset(self) -> pads.Dataset | None:
        try:
            discovered = open_committed_dataset(self.state.fs, self.location, self.state.unreadable_files)
            if discovered is None or not discovered.files:
                return None
            # Older files lack newer columns (read as NULL); files of newer scans may carry columns we do not know.
            return discovered.replace_schema(pa.unify_schemas([discovered.schema, schema.OUTPUT_SCHEMA]))
        except (FileNotFoundError, pa.ArrowInvalid, IndexError):
            return None

    @property
    def warnings(self) -> list[str]:
        """Damaged manifests and committed files met while opening the output (left out of every count)."""
        return [*self.state.unreadable_manifests.values(), *self.state.unreadable_files.values()]

    @property
    def complete_scans(self) -> list[ScanManifest]:
        return [m for m in self.manifests if m.state == COMPLETE]

    def manifest(self, scan_id: str) -> ScanManifest | None:
        return next((m for m in self.manifests if m.scan_id == scan_id), None)

    def select(self, view: str | None = None, scan_id: str | None = None) -> Selection:
        """`scan_id` picks that scan; otherwise `view` (default `archive`) picks the archive or the latest scan."""
        if scan_id is not None:
            manifest = self.manifest(scan_id)
            if manifest is None:
                known = ", ".join(m.scan_id for m in self.manifests[-5:]) or "none"
                raise ResultsError(f"No scan {scan_id!r} under {self.location.uri} (latest scans: {known}). "
                                   "Run `forgescan summary` to list them.")
            note = "" if manifest.state == COMPLETE else f" ({manifest.state}: rows committed so far)"
            return Selection(SCAN_VIEW, (scan_id,), f"scan {scan_id}{note}")
        complete = self.complete_scans
        if not complete:
            raise ResultsError(f"No complete scan under {self.location.uri}: run `forgescan scan SOURCE --output "
                               f"{self.location.uri}` first, or pass --scan-id for an interrupted one.")
        if (view or ARCHIVE_VIEW) == SCAN_VIEW:
            latest = complete[-1].scan_id
            return Selection(SCAN_VIEW, (latest,), f"latest complete scan {latest}")
        ids = tuple(m.scan_id for m in complete)
        return Selection(ARCHIVE_VIEW, ids, f"current state of the archive: latest row per object across {len(ids)} "
                                            f"complete scan{'s' if len(ids) != 1 else ''}")

    def relation_sql(self, selection: Selection, columns: list[str]) -> str:
        """SQL for the selection's rows with the given columns (missing columns come back as NULL)."""
        projected = ", ".join(c if c in self.columns else f"NULL AS {c}" for c in dict.fromkeys(columns))
        ids = ", ".join(_quote(i) for i in selection.scan_ids)
        where = f"{schema.SCAN_ID} IN ({ids})"
        if selection.view == SCAN_VIEW:
            return f"SELECT {projected} FROM results WHERE {where}"
        return (f"SELECT {projected} FROM results WHERE {where} QUALIFY row_number() OVER "
                f"(PARTITION BY {schema.URI} ORDER BY {schema.SCANNED_AT} DESC, {schema.SCAN_ID} DESC) = 1")

    def selection_table(self, selection: Selection) -> str:
        """A DuckDB temp table of the selection's small columns: one pass over the Parquet files per selection."""
        if selection not in self._selection_tables:
            name = f"selection_{len(self._selection_tables)}"
            self.connection.execute(f"CREATE TEMP TABLE {name} AS {self.relation_sql(selection, list(SELECTION_COLUMNS))}")
            self._selection_tables[selection] = name
        return self._selection_tables[selection]

    def counts(self, selection: Selection) -> Counts:
        sql = f"SELECT * FROM {self.selection_table(selection)}"
        grouped = self.connection.sql(
            f"SELECT {schema.STATUS}, {schema.VERDICT}, split_part({schema.ERROR}, ':', 1) AS kind, count(*) AS n "
            f"FROM ({sql}) GROUP BY ALL").fetchall()
        counts = Counts()
        for status, verdict, kind, n in grouped:
            counts.add(status, verdict, kind, n)
        counts.objects = self.connection.sql(f"SELECT count(DISTINCT {schema.URI}) FROM ({sql})").fetchall()[0][0]
        counts.put_in_order()
        return counts

    def counts_per_scan(self) -> dict[str, Counts]:
        """Counts of every scan's committed rows, in one pass over the status columns."""
        grouped = self.connection.sql(
            f"SELECT {schema.SCAN_ID}, {schema.STATUS}, {schema.VERDICT}, split_part({schema.ERROR}, ':', 1), count(*), "
            f"count(DISTINCT {schema.URI}) FROM results GROUP BY ALL").fetchall()
        per_scan: dict[str, Counts] = {m.scan_id: Counts() for m in self.manifests}
        for scan_id, status, verdict, kind, n, objects in grouped:
            counts = per_scan.setdefault(scan_id, Counts())
            counts.add(status, verdict, kind, n)
            counts.objects += objects  # distinct per (status, verdict, kind) group: a URI sits in one group per scan
        for counts in per_scan.values():
            counts.put_in_order()
        return per_scan

    def histograms(self, selection: Selection, bins: int = HISTOGRAM_BINS) -> dict[str, dict[str, list[int]]]:
        """Per score column and verdict, counts of ok rows in `bins` equal bins over [0, 1]."""
        sql = f"SELECT * FROM {self.selection_table(selection)}"
        result: dict[str, dict[str, list[int]]] = {}
        for column in (schema.AI_SCORE, schema.MANIPULATION_SCORE):
            rows = self.connection.sql(
                f"SELECT {schema.VERDICT}, least(greatest(floor({column} * {bins}), 0), {bins - 1})::INTEGER AS bin, "
                f"count(*) FROM ({sql}) WHERE {schema.STATUS} = 'ok' AND {column} IS NOT NULL GROUP BY ALL").fetchall()
            per_verdict: dict[str, list[int]] = {}
            for verdict, bin_index, n in rows:
                per_verdict.setdefault(verdict, [0] * bins)[bin_index] += n
            result[column] = dict(sorted(per_verdict.items()))
        return result

    def top_rows(self, selection: Selection, verdicts: tuple[str, ...] = FLAGGED_VERDICTS, min_score: float = 0.0,
                 limit: int = 50) -> list[dict]:
        """The `limit` highest-scoring ok rows with these verdicts, with the columns a report shows but no masks.

        The top-k runs on the selection's small columns; only those k rows are then read in full.
        """
        verdict_list = ", ".join(_quote(v) for v in verdicts)
        chosen = self.connection.execute(
            f"SELECT {schema.SCAN_ID}, {schema.URI}, {SUSPICION_SQL} AS suspicion FROM {self.selection_table(selection)} "
            f"WHERE {schema.STATUS} = 'ok' AND {schema.VERDICT} IN ({verdict_list}) AND {SUSPICION_SQL} >= ? "
            f"ORDER BY suspicion DESC, {schema.URI} LIMIT ?", [float(min_score), int(limit)]).fetchall()
        details = self.rows_of([(scan_id, uri) for scan_id, uri, _ in chosen],
                               [c for c in ROW_COLUMNS if c in self.columns])
        return [{**{c: None for c in ROW_COLUMNS}, **details.get((scan_id, uri), {}), "suspicion": suspicion}
                for scan_id, uri, suspicion in chosen]

    def rows_of(self, keys: list[tuple[str, str]], columns: list[str]) -> dict[tuple[str, str], dict]:
        """`(scan_id, uri) -> {column: value}` for these rows only (scan and URI filters pushed down to Parquet)."""
        if self.dataset is None or not keys:
            return {}
        columns = list(dict.fromkeys([schema.SCAN_ID, schema.URI, *columns]))
        by_scan: dict[str, list[str]] = {}
        for scan_id, uri in keys:
            by_scan.setdefault(scan_id, []).append(uri)
        found = {}
        for scan_id, uris in by_scan.items():
            wanted = (pc.field(schema.SCAN_ID) == scan_id) & pc.field(schema.URI).isin(uris)
            for record in self.dataset.to_table(columns=columns, filter=wanted).to_pylist():
                found[(record[schema.SCAN_ID], record[schema.URI])] = record
        return found

    def masks(self, rows: list[dict]) -> dict[tuple[str, str], dict]:
        """`(scan_id, uri) -> {"mask_rle": ..., <per-class column>: ...}` for these rows only."""
        if self.dataset is None:
            return {}
        class_column = class_mask_column(self.dataset.schema)
        return self.rows_of([(r[schema.SCAN_ID], r[schema.URI]) for r in rows],
                            [schema.MASK_RLE] + ([class_column] if class_column else []))


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
