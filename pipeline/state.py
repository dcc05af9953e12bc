"""Scan state kept beside the results: manifests, resume and incremental planning.

Each scan has a manifest `OUTPUT/_forgescan/scans/<scan_id>.json` that says
whether it is `running` or `complete`, with counts and model versions. The
committed Parquet files are the truth about which objects are done, so:
- an interrupted scan of the same source resumes under its scan_id and skips
  the URIs already committed for it (exactly one row per object per scan);
- a new scan skips objects whose identity (uri, size, ETag, mtime) matches
  their latest `ok` row, or latest permanent error (not an image, empty, ...),
  in the earlier complete scans, unless `--full`. Planning reads that from the
  compact latest-state table (pipeline.latest_state), never the scans.

Manifests are written atomically (a renamed local file, one PUT on object
stores). Readers never trust a file blindly: an unreadable manifest or a
truncated committed Parquet file is named in a warning and left out, so only
the objects it held are processed again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.latest_state import (
    IDENTITY_HASH, PERMANENT_ERROR, PLANNING_COLUMNS, LatestStateTable, string_hashes,
)
from pipeline.sink import scan_directory
from pipeline.storage import Location, filesystem_for, storage_options_key, strip_credentials

logger = logging.getLogger("forgescan")

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
    # The segmenter card's settings that shape its map besides the thresholds (forensics.model_card.ModelCard:
    # resize_mode, input_size, tile_overlap, coarse_short_side, mirror_views); empty in older manifests.
    segmenter_settings: dict = field(default_factory=dict)
    # Wall seconds per phase of the scan (pipeline.scan.PhaseClock); empty in older manifests.
    timings: dict = field(default_factory=dict)

    def to_json(self) -> str:
        fields = asdict(self)
        for name in ("endpoint_url", "source", "output"):
            fields[name] = strip_credentials(fields[name])
        return json.dumps(fields, indent=2, sort_keys=True)


class ScanState:
    """Reads and writes manifests and committed rows under one output location."""

    def __init__(self, output: Location, endpoint_url: str | None, storage_options: dict | None):
        self.output = output
        self.endpoint_url = endpoint_url
        self.options_json = storage_options_key(storage_options)
        self.fs = filesystem_for(output.protocol, endpoint_url, self.options_json)
        # Files met while reading that are damaged, with what was done about them (for summaries and reports).
        self.unreadable_manifests: dict[str, str] = {}
        self.unreadable_files: dict[str, str] = {}

    def manifest_location(self, scan_id: str) -> Location:
        return self.output.child(f"{STATE_FOLDER}/{scan_id}.json")

    def write_manifest(self, manifest: ScanManifest) -> None:
        """Replace the manifest in one step: readers see the old or the new one, never a part."""
        location = self.manifest_location(manifest.scan_id)
        data = (manifest.to_json() + "\n").encode()
        if location.protocol == "file":
            directory, name = os.path.split(location.path)
            os.makedirs(directory, exist_ok=True)
            staging = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.partial")
            with open(staging, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, location.path)
            return
        self.fs.pipe_file(location.path, data)  # one PUT: the object store publishes it whole or not at all

    def manifests(self) -> list[ScanManifest]:
        folder = self.output.child(STATE_FOLDER).path
        try:
            paths = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        except FileNotFoundError:
            return []
        found = []
        for path in paths:
            manifest = self._read_manifest(path)
            if manifest is not None:
                found.append(manifest)
        return found

    def _read_manifest(self, path: str) -> ScanManifest | None:
        """One manifest, or None (with a warning naming the file and the fix) when it is empty or damaged."""
        uri = path if self.output.protocol == "file" else f"{self.output.protocol}://{path}"
        data = b""
        try:
            with self.fs.open(path, "rb") as handle:
                data = handle.read()
            fields = json.loads(data)
            known = {k: v for k, v in fields.items() if k in ScanManifest.__dataclass_fields__}
            return ScanManifest(**known)
        except (ValueError, TypeError, AttributeError) as error:
            problem = "is empty" if not data.strip() else f"is not a complete scan manifest ({type(error).__name__})"
            if uri not in self.unreadable_manifests:
                message = (f"scan manifest {uri} {problem}; that scan is treated as unfinished and its objects are "
                           "scanned again (its committed rows stay). Delete the file to silence this warning.")
                self.unreadable_manifests[uri] = message
                logger.warning(message)
            return None

    def resumable_scan(self, source: str) -> ScanManifest | None:
        """The latest interrupted (still `running`) scan of the same source, if any."""
        running = [m for m in self.manifests() if m.state == RUNNING and m.source == source]
        return running[-1] if running else None

    def _dataset(self, location: Location) -> pads.Dataset | None:
        return open_committed_dataset(self.fs, location, self.unreadable_files)

    def scan_rows(self, scan_id: str, columns: list[str]) -> pa.Table:
        """Committed rows of one scan (only files named *.parquet, which are complete by construction)."""
        dataset = self._dataset(scan_directory(self.output, scan_id))
        if dataset is None:
            return pa.table({c: pa.array([], schema.OUTPUT_SCHEMA.field(c).type) for c in columns})
        return dataset.to_table(columns=columns)

    def count_rows(self, scan_id: str) -> dict:
        """Rows, objects, statuses, verdicts and error kinds of one scan, counted by DuckDB over the Parquet
        files (four small columns read, nothing materialised in Python)."""
        import duckdb

        dataset = self._dataset(scan_directory(self.output, scan_id))
        counts = {"rows": 0, "distinct_uris": 0, "ok": 0, "errors": 0, "verdicts": {}, "error_kinds": {}}
        if dataset is None:
            return counts
        connection = duckdb.connect()
        connection.register("scan_rows", dataset)
        grouped = connection.sql(
            f"SELECT {schema.STATUS}, {schema.VERDICT}, split_part({schema.ERROR}, ':', 1), count(*) "
            "FROM scan_rows GROUP BY ALL").fetchall()
        counts["distinct_uris"] = connection.sql(f"SELECT count(DISTINCT {schema.URI}) FROM scan_rows").fetchall()[0][0]
        connection.close()
        for status, verdict, kind, n in grouped:
            counts["rows"] += n
            counts["ok" if status == schema.STATUS_OK else "errors"] += n
            counts["verdicts"][verdict] = counts["verdicts"].get(verdict, 0) + n
            if kind:
                counts["error_kinds"][kind] = counts["error_kinds"].get(kind, 0) + n
        counts["verdicts"] = dict(sorted(counts["verdicts"].items()))
        counts["error_kinds"] = dict(sorted(counts["error_kinds"].items()))
        return counts

    def latest_state(self, columns: list[str] | None = None, finishing: str | None = None) -> pa.Table:
        """The latest state per object over every complete scan (pipeline.latest_state), folded up to date;
        `finishing` counts a scan whose rows are all committed as complete already."""
        complete = [m.scan_id for m in self.manifests() if m.state == COMPLETE] + ([finishing] if finishing else [])
        return LatestStateTable(self).current(complete, columns)


def open_committed_dataset(fs, location: Location, unreadable: dict[str, str]) -> pads.Dataset | None:
    """The committed Parquet files under `location` as one dataset, leaving out (and naming) damaged ones.

    Every file's footer is read once: a truncated file (a failed copy, a full disk, a
    person) is recorded in `unreadable` with a warning instead of failing every reader.
    """
    try:
        if not fs.exists(location.path):
            return None
        found = fs.find(location.path)
    except FileNotFoundError:
        return None
    base = location.path.rstrip("/")
    filesystem = None if location.protocol == "file" else fs
    readable = []
    for path in sorted(found):
        relative = path[len(base):].lstrip("/") if path.startswith(base) else path
        if not path.endswith(".parquet") or any(part.startswith((".", "_")) for part in relative.split("/")):
            continue  # staging files (.partial) and forgescan's own state (_forgescan/) are not results
        try:
            pq.read_metadata(path, filesystem=filesystem)
            readable.append(path)
        except (pa.ArrowInvalid, OSError) as error:
            uri = path if location.protocol == "file" else f"{location.protocol}://{path}"
            if uri not in unreadable:
                message = (f"committed file {uri} is truncated or damaged ({type(error).__name__}); it is left out "
                           "and the objects it held count as not scanned, so the next scan processes them again. "
                           "Delete the file once that scan has run.")
                unreadable[uri] = message
                logger.warning(message)
    if not readable:
        return None
    return pads.dataset(readable, format="parquet", filesystem=filesystem, partitioning="hive",
                        partition_base_dir=location.path)


@dataclass(frozen=True)
class ScanPlan:
    """What a scan will do: its id, whether it resumes, and which objects it may skip."""

    scan_id: str
    resumed: bool
    mode: str  # full | incremental | resume
    # Sorted uint64 hashes (pipeline.latest_state) the skip stage probes:
    skip_uris: np.ndarray  # URIs already committed in this scan (resume)
    skip_identities: np.ndarray  # objects unchanged since an `ok` row of an earlier complete scan
    skip_permanent_errors: np.ndarray  # objects unchanged since a permanent error (not an image, empty, ...)
    attempts: int = 1
    notes: tuple[str, ...] = ()

    @property
    def expects_known_objects(self) -> bool:
        """Whether earlier work lets the skip stage drop listed objects (an increment or a resume)."""
        return bool(len(self.skip_uris) or len(self.skip_identities) or len(self.skip_permanent_errors))


class PlanError(RuntimeError):
    """The requested scan cannot go ahead as asked; the message says what to do instead."""


def plan_scan(state: ScanState, source: str, scan_id: str | None, full: bool, rescan_on_model_change: bool,
              classifier_version: str, segmenter_version: str) -> ScanPlan:
    empty = np.empty(0, dtype=np.uint64)
    manifests = state.manifests()
    notes: list[str] = []
    resumable = None
    if scan_id is not None:
        resumable = next((m for m in manifests if m.scan_id == scan_id), None)
        if resumable is not None and resumable.state == RUNNING and resumable.source != source:
            raise PlanError(f"Scan {scan_id} in {state.output.uri} is a scan of {resumable.source}, not of {source}; "
                            "pass another --scan-id (or none) to scan this source.")
    else:
        resumable = state.resumable_scan(source)
    versions = (classifier_version, segmenter_version)
    if resumable is not None and resumable.state == RUNNING and \
            (resumable.classifier_version, resumable.segmenter_version) != versions:
        started_with = f"classifier {resumable.classifier_version}, segmenter {resumable.segmenter_version}"
        if scan_id is not None:
            raise PlanError(
                f"Scan {scan_id} was started with {started_with}; resuming it with classifier {classifier_version}, "
                f"segmenter {segmenter_version} would mix model versions in one scan. Resume with the same "
                "checkpoints, or pass a new --scan-id (or none) to start a new scan (add --full to re-process "
                "every object)."
            )
        notes.append(f"interrupted scan {resumable.scan_id} ({started_with}) used other models than this run; a new "
                     "scan was started instead of resuming it, so one scan never mixes model versions")
        resumable = None
    if resumable is not None and resumable.state == RUNNING:
        scan_id = resumable.scan_id
        skip_uris = np.unique(string_hashes(state.scan_rows(scan_id, [schema.URI]).column(schema.URI)))
    else:
        scan_id = scan_id or new_scan_id()
        skip_uris = empty
    skip_identities = skip_permanent_errors = empty
    if not full:
        complete = [m.scan_id for m in manifests if m.state == COMPLETE and m.scan_id != scan_id]
        latest = LatestStateTable(state).current(complete, PLANNING_COLUMNS)
        if latest.num_rows:
            hashes = latest.column(IDENTITY_HASH).to_numpy()
            ok = pc.equal(latest.column(schema.STATUS), schema.STATUS_OK)
            same_models = pc.fill_null(pc.and_(pc.equal(latest.column(schema.CLASSIFIER_VERSION), classifier_version),
                                               pc.equal(latest.column(schema.SEGMENTER_VERSION), segmenter_version)), False)
            reusable = pc.and_(ok, same_models) if rescan_on_model_change else ok
            skip_identities = np.unique(hashes[reusable.to_numpy(zero_copy_only=False)])
            skip_permanent_errors = np.unique(hashes[latest.column(PERMANENT_ERROR).to_numpy()])
            older = pc.sum(pc.cast(pc.and_(ok, pc.invert(same_models)), pa.int64())).as_py() or 0
            if older and not rescan_on_model_change:
                notes.append(f"{older} objects of earlier scans were judged by other model versions and are skipped "
                             f"while unchanged (this run: "
                             f"classifier {classifier_version}, segmenter {segmenter_version}); pass "
                             "--rescan-on-model-change to re-process them")
    mode = "resume" if resumable is not None and resumable.state == RUNNING else ("full" if full else "incremental")
    attempts = (resumable.attempts + 1) if resumable is not None and resumable.state == RUNNING else 1
    return ScanPlan(scan_id=scan_id, resumed=mode == "resume", mode=mode, skip_uris=skip_uris,
                    skip_identities=skip_identities, skip_permanent_errors=skip_permanent_errors, attempts=attempts,
                    notes=tuple(notes))


LEASE_FILE = "_forgescan/lease.json"
LEASE_HEARTBEAT_SECONDS = 10.0
LEASE_EXPIRY_SECONDS = 120.0  # a lease not renewed for this long belongs to a dead driver
SCAN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class LeaseError(RuntimeError):
    """Another live driver holds the output; the message names it and what to do."""


def validate_scan_id(scan_id: str) -> str:
    """A user-given scan id becomes a folder name: letters, digits, `.`, `_`, `-` only, never `..`."""
    if not SCAN_ID_PATTERN.fullmatch(scan_id) or ".." in scan_id:
        raise ValueError(f"--scan-id {scan_id!r} is not a valid scan id: use letters, digits, '.', '_' and '-' "
                         "(at most 128, starting with a letter or digit, no '..' or '/').")
    return scan_id


@dataclass
class OutputLease:
    """Who drives scans into an output right now: one driver at a time, renewed by a heartbeat."""

    owner: str  # host:pid:token
    scan_id: str
    source: str
    acquired_at: float
    heartbeat_at: float
    expiry_seconds: float = LEASE_EXPIRY_SECONDS

    @property
    def host(self) -> str:
        return self.owner.split(":", 1)[0]

    @property
    def pid(self) -> int:
        return int(self.owner.split(":")[1])

    def age(self, now: float) -> float:
        return now - self.heartbeat_at

    def driver_is_dead(self, now: float) -> bool:
        """Expired, or held by a process of this host that no longer exists."""
        if self.age(now) > self.expiry_seconds:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False


class LeaseKeeper:
    """Holds the output's lease for one driver: acquire, renew in the background, release."""

    def __init__(self, state: ScanState, expiry_seconds: float = LEASE_EXPIRY_SECONDS,
                 heartbeat_seconds: float = LEASE_HEARTBEAT_SECONDS):
        self.state = state
        self.location = state.output.child(LEASE_FILE)
        self.expiry_seconds = expiry_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease: OutputLease | None = None
        self.took_over: OutputLease | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> OutputLease | None:
        try:
            with self.state.fs.open(self.location.path, "rb") as handle:
                return OutputLease(**json.loads(handle.read()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as error:  # a half-written lease: its writer died while creating it
            logger.warning("lease %s is unreadable (%s); treating it as stale", self.location.uri, type(error).__name__)
            return OutputLease(owner="unknown:0:0", scan_id="unknown", source="unknown", acquired_at=0.0, heartbeat_at=0.0)

    def acquire(self, scan_id: str, source: str) -> None:
        """Take the lease, or take over a dead driver's; raises LeaseError while a live driver holds it."""
        now = time.time()
        lease = OutputLease(owner=self.owner, scan_id=scan_id, source=source, acquired_at=now, heartbeat_at=now,
                            expiry_seconds=self.expiry_seconds)
        if not self._create(lease):
            held = self.read()
            if held is not None and not held.driver_is_dead(time.time()):
                raise LeaseError(
                    f"Output {self.state.output.uri} is being written by another driver ({held.owner.rsplit(':', 1)[0]}, "
                    f"scan {held.scan_id} of {held.source}, last heartbeat {held.age(time.time()):.0f} s ago). "
                    "Wait for it to finish, or write to another --output. If that driver is dead, its lease expires "
                    f"{max(0.0, held.expiry_seconds - held.age(time.time())):.0f} s after its last heartbeat "
                    f"(or delete {self.location.uri}) and the next run takes over."
                )
            self._break(held)
            if not self._create(lease):
                raise LeaseError(f"Output {self.state.output.uri}: another driver took the lease at the same moment; "
                                 "run again later.")
            self.took_over = held
            if held is not None:
                logger.warning("took over the lease of %s from a dead driver (%s, scan %s)", self.state.output.uri,
                               held.owner.rsplit(":", 1)[0], held.scan_id)
        self.lease = lease
        self._thread = threading.Thread(target=self._heartbeat, name="forgescan-lease", daemon=True)
        self._thread.start()

    def update_scan(self, scan_id: str) -> None:
        if self.lease is not None:
            self.lease.scan_id = scan_id
            self._renew()

    def check(self) -> None:
        """Raise LeaseError if another driver took the lease away (this driver was presumed dead)."""
        if self.lost:
            raise LeaseError(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = self.read()
        if held is not None and held.owner == self.owner:
            try:
                self.state.fs.rm_file(self.location.path)
            except FileNotFoundError:
                pass
        self.lease = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                held = self.read()
                if held is not None and held.owner != self.owner:
                    self.lost = (f"Output {self.state.output.uri}: driver {held.owner.rsplit(':', 1)[0]} took over the "
                                 "lease (this driver missed its heartbeats); stop this run and let that one finish.")
                    logger.error(self.lost)
                    return
                self._renew()
            except Exception as error:  # a missed beat is retried; only expiry matters
                logger.warning("could not renew the lease on %s (%s)", self.location.uri, type(error).__name__)

    def _renew(self) -> None:
        assert self.lease is not None
        self.lease.heartbeat_at = time.time()
        data = json.dumps(asdict(self.lease)).encode()
        if self.location.protocol == "file":
            staging = f"{self.location.path}.{uuid.uuid4().hex[:8]}.partial"
            with open(staging, "wb") as handle:
                handle.write(data)
            os.replace(staging, self.location.path)
        else:
            self.state.fs.pipe_file(self.location.path, data)

    def _create(self, lease: OutputLease) -> bool:
        """Create the lease file only if none exists (O_EXCL locally, a conditional PUT on S3)."""
        data = json.dumps(asdict(lease)).encode()
        if self.location.protocol == "file":
            os.makedirs(os.path.dirname(self.location.path), exist_ok=True)
            staging = f"{self.location.path}.{uuid.uuid4().hex[:8]}.partial"
            with open(staging, "wb") as handle:
                handle.write(data)
            try:
                os.link(staging, self.location.path)  # fails if the lease exists; never shows a partial file
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(staging)
        try:
            with self.state.fs.open(self.location.path, "xb") as handle:
                handle.write(data)
            return True
        except (FileExistsError, OSError) as error:
            if isinstance(error, FileExistsError) or "PreconditionFailed" in str(error) or "412" in str(error):
                return False
            raise

    def _break(self, stale: OutputLease | None) -> None:
        if self.location.protocol == "file":
            stale_path = f"{self.location.path}.{uuid.uuid4().hex[:8]}.stale"
            try:  # a rename only one breaker can win: two drivers never both take over
                os.rename(self.location.path, stale_path)
            except FileNotFoundError:
                return
            with open(stale_path, "rb") as handle:
                moved = handle.read()
            if stale is not None and json.loads(moved or b"{}").get("owner") not in (stale.owner, None):
                try:  # it was a fresh lease another breaker had just created: give it back
                    os.link(stale_path, self.location.path)
                except FileExistsError:
                    pass
            os.unlink(stale_path)
            return
        try:
            self.state.fs.rm_file(self.location.path)
        except FileNotFoundError:
            pass
