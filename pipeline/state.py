"""Scan state kept beside the results: manifests, resume and incremental planning.

Each scan has a manifest `OUTPUT/_forgescan/scans/<scan_id>.json` that says
whether it is `running` or `complete`, with counts and model versions. The
committed Parquet files are the truth about which objects are done, so:
- an interrupted scan of the same source resumes under its scan_id and skips
  the URIs already committed for it (exactly one row per object per scan);
- a new scan skips objects whose identity (uri, size, ETag, mtime) matches an
  `ok` row of an earlier complete scan, unless `--full`.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline import schema
from pipeline.sink import scan_directory
from pipeline.storage import Location, filesystem_for, storage_options_key

RUNNING = "running"
COMPLETE = "complete"
STATE_FOLDER = "_forgescan/scans"


def new_scan_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"scan-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ScanManifest:
    """The completion marker and record of one scan (never contains credentials)."""

    scan_id: str
    source: str
    output: str
    state: str
    started_at: str
    classifier_version: str
    segmenter_version: str
    finished_at: str | None = None
    endpoint_url: str | None = None
    mode: str = "full"
    counts: dict = field(default_factory=dict)
    files: int = 0
    attempts: int = 1
    # The card thresholds the rows were judged by (`ai_generated`, `manipulated`, `pixel`); empty in older manifests.
    thresholds: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class ScanState:
    """Reads and writes manifests and committed rows under one output location."""

    def __init__(self, output: Location, endpoint_url: str | None, storage_options: dict | None):
        self.output = output
        self.endpoint_url = endpoint_url
        self.options_json = storage_options_key(storage_options)
        self.fs = filesystem_for(output.protocol, endpoint_url, self.options_json)

    def manifest_location(self, scan_id: str) -> Location:
        return self.output.child(f"{STATE_FOLDER}/{scan_id}.json")

    def write_manifest(self, manifest: ScanManifest) -> None:
        location = self.manifest_location(manifest.scan_id)
        self.fs.makedirs(location.path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(location.path, "w") as handle:
            handle.write(manifest.to_json() + "\n")

    def manifests(self) -> list[ScanManifest]:
        folder = self.output.child(STATE_FOLDER).path
        try:
            paths = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        except FileNotFoundError:
            return []
        found = []
        for path in paths:
            with self.fs.open(path, "r") as handle:
                found.append(ScanManifest(**json.load(handle)))
        return found

    def resumable_scan(self, source: str) -> ScanManifest | None:
        """The latest interrupted (still `running`) scan of the same source, if any."""
        running = [m for m in self.manifests() if m.state == RUNNING and m.source == source]
        return running[-1] if running else None

    def _dataset(self, location: Location) -> pads.Dataset | None:
        try:
            if not self.fs.exists(location.path):
                return None
            filesystem = None if location.protocol == "file" else self.fs
            return pads.dataset(location.path, format="parquet", filesystem=filesystem, partitioning="hive",
                                exclude_invalid_files=False)
        except (FileNotFoundError, pa.ArrowInvalid):
            return None

    def scan_rows(self, scan_id: str, columns: list[str]) -> pa.Table:
        """Committed rows of one scan (only files named *.parquet, which are complete by construction)."""
        dataset = self._dataset(scan_directory(self.output, scan_id))
        if dataset is None:
            return pa.table({c: pa.array([], schema.OUTPUT_SCHEMA.field(c).type) for c in columns})
        return dataset.to_table(columns=columns)

    def previous_results(self, completed_scan_ids: list[str], columns: list[str]) -> pa.Table:
        tables = [self.scan_rows(scan_id, columns) for scan_id in completed_scan_ids]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return pa.table({c: pa.array([], schema.OUTPUT_SCHEMA.field(c).type) for c in columns})
        return pa.concat_tables(tables)

    def count_rows(self, scan_id: str) -> dict:
        table = self.scan_rows(scan_id, [schema.URI, schema.STATUS, schema.VERDICT, schema.ERROR])
        statuses = table.column(schema.STATUS).to_pylist()
        verdicts = table.column(schema.VERDICT).to_pylist()
        errors = [e.split(":", 1)[0] for e in table.column(schema.ERROR).to_pylist() if e]
        return {
            "rows": table.num_rows,
            "distinct_uris": len(set(table.column(schema.URI).to_pylist())),
            "ok": statuses.count(schema.STATUS_OK),
            "errors": statuses.count(schema.STATUS_ERROR),
            "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))},
            "error_kinds": {k: errors.count(k) for k in sorted(set(errors))},
        }


def identity_key(uris, sizes, etags, mtimes) -> pa.Array:
    """`uri|size|etag|mtime` as one string per object: equal keys mean an unchanged object."""
    def text(values):
        return pc.fill_null(pc.cast(pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values, pa.string()), "")
    return pc.binary_join_element_wise(text(uris), text(sizes), text(etags), text(mtimes), "|")


@dataclass(frozen=True)
class ScanPlan:
    """What a scan will do: its id, whether it resumes, and which objects it may skip."""

    scan_id: str
    resumed: bool
    mode: str  # full | incremental | resume
    skip_uris: pa.Array  # already committed in this scan
    skip_identities: pa.Array  # unchanged since an earlier complete scan
    attempts: int = 1


def plan_scan(state: ScanState, source: str, scan_id: str | None, full: bool, rescan_on_model_change: bool,
              classifier_version: str, segmenter_version: str) -> ScanPlan:
    empty = pa.array([], pa.string())
    manifests = state.manifests()
    resumable = None
    if scan_id is not None:
        resumable = next((m for m in manifests if m.scan_id == scan_id), None)
    else:
        resumable = state.resumable_scan(source)
    if resumable is not None and resumable.state == RUNNING:
        scan_id = resumable.scan_id
        done = state.scan_rows(scan_id, [schema.URI]).column(schema.URI)
        skip_uris = pc.unique(done.combine_chunks()) if len(done) else empty
    else:
        scan_id = scan_id or new_scan_id()
        skip_uris = empty
    skip_identities = empty
    if not full:
        completed = [m.scan_id for m in manifests if m.state == COMPLETE and m.scan_id != scan_id]
        columns = [schema.URI, schema.SIZE_BYTES, schema.ETAG, schema.MTIME, schema.STATUS,
                   schema.CLASSIFIER_VERSION, schema.SEGMENTER_VERSION]
        previous = state.previous_results(completed, columns)
        if previous.num_rows:
            keep = pc.equal(previous.column(schema.STATUS), schema.STATUS_OK)
            if rescan_on_model_change:
                keep = pc.and_(keep, pc.and_(pc.equal(previous.column(schema.CLASSIFIER_VERSION), classifier_version),
                                             pc.equal(previous.column(schema.SEGMENTER_VERSION), segmenter_version)))
            previous = previous.filter(keep)
            skip_identities = pc.unique(identity_key(previous.column(schema.URI), previous.column(schema.SIZE_BYTES),
                                                     previous.column(schema.ETAG), previous.column(schema.MTIME)).combine_chunks()) if previous.num_rows else empty
    mode = "resume" if resumable is not None and resumable.state == RUNNING else ("full" if full else "incremental")
    attempts = (resumable.attempts + 1) if resumable is not None and resumable.state == RUNNING else 1
    return ScanPlan(scan_id=scan_id, resumed=mode == "resume", mode=mode, skip_uris=skip_uris,
                    skip_identities=skip_identities, attempts=attempts)
