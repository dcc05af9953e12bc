"""How planning and skipping scale with the objects earlier scans saw: time per object and driver memory at 10k-1M.

    python -m bench.planning_scale                       # 10k, 100k and 1M earlier objects
    python -m bench.planning_scale --sizes 10000 100000  # a quicker run

For each size N it writes an output as a long-running archive leaves it,
with synthetic rows (no images are read; planning never looks at pixels):
a first complete scan of N objects (2 % permanent errors such as
`not_an_image`, 1 % transient `read_failed`, the rest `ok`), then two nightly
increments that each re-judged 1 % of the objects. Then, each in a fresh
process so that its peak resident memory is its own:

- `rebuild`: planning on that output without its latest-state table, as an
  output written before the table existed is met once (the table is rebuilt
  from the scans and written);
- `plan`: planning with the table in place (what every scheduled scan pays),
  then the skip stage over a listing of the N objects plus 1 % new ones, in
  the scan's own listing blocks (`ScanConfig.listing_block_rows`), through the
  scan's own function (`pipeline.stages.drop_known_objects`);
- `finish`: what a scan pays after its last row: folding its rows (1 % of N)
  into the table and counting its rows by DuckDB.

It records seconds, microseconds per object and peak RSS of each process (the
imports alone are measured too, as `baseline_rss_mb`), and checks the skip
stage's counts, so the figures are of a correct plan. Results:
`bench/results/planning_scale.json`; docs/performance.md cites them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.config import ScanConfig
from pipeline.latest_state import LATEST_STATE_FILE
from pipeline.state import COMPLETE, STATE_FOLDER, ScanManifest, ScanState, plan_scan
from pipeline.storage import parse_location

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "planning_scale.json"
ROWS_PER_FILE = 50_000
SOURCE = "s3://archive/photos"
CLASSIFIER_VERSION, SEGMENTER_VERSION = "bench-classifier-v1", "bench-segmenter-v1"
PERMANENT_SHARE, TRANSIENT_SHARE, INCREMENT_SHARE = 0.02, 0.01, 0.01
FIRST_SCAN = "scan-20260101T000000Z-first0"
INCREMENTS = ("scan-20260102T000000Z-incr01", "scan-20260103T000000Z-incr02")
FINISHING = "scan-20260104T000000Z-finish"


def object_uris(indices: np.ndarray) -> pa.Array:
    return pa.array([f"{SOURCE}/{i // 1000:05d}/IMG_{i:08d}.jpg" for i in indices.tolist()], pa.string())


def object_identity(indices: np.ndarray, version: int) -> dict[str, pa.Array]:
    """URI, size, ETag and mtime of objects as the listing reports them; `version` changes the bytes."""
    return {
        schema.URI: object_uris(indices),
        schema.SIZE_BYTES: pa.array(200_000 + indices * 7 + version, pa.int64()),
        schema.ETAG: pa.array([f'"{i:016x}{version:04x}"' for i in indices.tolist()], pa.string()),
        schema.MTIME: pa.array([f"2026-01-{1 + version:02d}T00:00:00+00:00"] * len(indices), pa.string()),
    }


def scan_rows(scan_id: str, indices: np.ndarray, version: int, rng: np.random.Generator) -> pa.Table:
    """Committed rows of one scan in the output schema (columns planning never reads left null)."""
    count = len(indices)
    draw = rng.random(count)
    status = np.where(draw < PERMANENT_SHARE + TRANSIENT_SHARE, schema.STATUS_ERROR, schema.STATUS_OK)
    error = np.where(draw < PERMANENT_SHARE, "not_an_image: the bytes are not an image",
                     np.where(draw < PERMANENT_SHARE + TRANSIENT_SHARE, "read_failed: timed out", None))
    columns = {
        schema.SCAN_ID: pa.array([scan_id] * count, pa.string()),
        **object_identity(indices, version),
        schema.STATUS: pa.array(status, pa.string()),
        schema.ERROR: pa.array(error, pa.string()),
        schema.VERDICT: pa.array(np.where(status == schema.STATUS_OK, "authentic", "error"), pa.string()),
        schema.CLASSIFIER_VERSION: pa.array([CLASSIFIER_VERSION] * count, pa.string()),
        schema.SEGMENTER_VERSION: pa.array([SEGMENTER_VERSION] * count, pa.string()),
        schema.SCANNED_AT: pa.array([dt.datetime(2026, 1, 1 + version, tzinfo=dt.timezone.utc)] * count,
                                    pa.timestamp("us", tz="UTC")),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(count, f.type) for f in schema.OUTPUT_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=schema.OUTPUT_SCHEMA)


def commit_scan(output: Path, scan_id: str, rows: pa.Table) -> None:
    folder = output / f"{schema.SCAN_ID}={scan_id}"
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows.num_rows, ROWS_PER_FILE):
        pq.write_table(rows.slice(start, ROWS_PER_FILE), folder / f"part-{start // ROWS_PER_FILE:06d}.parquet",
                       compression="zstd")
    manifest = ScanManifest(scan_id=scan_id, source=SOURCE, output=str(output), state=COMPLETE,
                            started_at="2026-01-01T00:00:00+00:00", classifier_version=CLASSIFIER_VERSION,
                            segmenter_version=SEGMENTER_VERSION, mode="incremental", finished_at="2026-01-01T00:00:00+00:00",
                            files=len(list(folder.glob("*.parquet"))))
    (output / STATE_FOLDER).mkdir(parents=True, exist_ok=True)
    (output / STATE_FOLDER / f"{scan_id}.json").write_text(manifest.to_json())


def increment(objects: int, which: int) -> np.ndarray:
    """The objects the `which`-th increment re-judged (changed bytes): a fixed 1 % slice."""
    share = max(1, int(objects * INCREMENT_SHARE))
    return np.arange(which * share, (which + 1) * share) % objects


def build_output(output: Path, objects: int) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    rng = np.random.default_rng(objects)
    started = time.perf_counter()
    commit_scan(output, FIRST_SCAN, scan_rows(FIRST_SCAN, np.arange(objects), 0, rng))
    for which, scan_id in enumerate(INCREMENTS, start=1):
        commit_scan(output, scan_id, scan_rows(scan_id, increment(objects, which), which, rng))
    bytes_on_disk = sum(p.stat().st_size for p in output.rglob("*.parquet"))
    return {"build_seconds": round(time.perf_counter() - started, 2), "committed_mb": round(bytes_on_disk / 2**20, 1)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the forking parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most systems


def listing_blocks(objects: int):
    """The next scan's listing: every earlier object as the last scan left it, plus 1 % new, in listing blocks."""
    block = ScanConfig(source=SOURCE, output="unused").listing_block_rows
    versions = np.zeros(objects, dtype=np.int64)
    for which in range(1, len(INCREMENTS) + 1):
        versions[increment(objects, which)] = which
    total = objects + max(1, int(objects * INCREMENT_SHARE))
    for start in range(0, total, block):
        indices = np.arange(start, min(total, start + block))
        known = indices[indices < objects]
        parts = [pa.table({**object_identity(known[versions[known] == v], v),
                           schema.ERROR: pa.nulls(int((versions[known] == v).sum()), pa.string())})
                 for v in np.unique(versions[known])]
        new = indices[indices >= objects]
        if len(new):
            parts.append(pa.table({**object_identity(new, 9), schema.ERROR: pa.nulls(len(new), pa.string())}))
        yield pa.concat_tables(parts).cast(schema.LISTING_SCHEMA)


def measure(output: Path, phase: str, objects: int) -> dict:
    from pipeline.stages import drop_known_objects

    baseline = peak_rss_mb()
    state = ScanState(parse_location(str(output)), None, None)
    result: dict = {"phase": phase, "baseline_rss_mb": round(baseline, 1)}
    if phase in ("rebuild", "plan"):
        started = time.perf_counter()
        plan = plan_scan(state, SOURCE, None, full=False, rescan_on_model_change=False,
                         classifier_version=CLASSIFIER_VERSION, segmenter_version=SEGMENTER_VERSION)
        result["plan_seconds"] = round(time.perf_counter() - started, 3)
        result["plan_us_per_object"] = round(1e6 * result["plan_seconds"] / objects, 2)
    if phase == "plan":
        counts = {"listed": 0, "unchanged": 0, "unchanged_permanent_errors": 0, "kept": 0}
        blocks = list(listing_blocks(objects))  # built before timing: the listing is the store's cost, not ours
        started = time.perf_counter()
        for block in blocks:
            kept, dropped = drop_known_objects(block, plan.skip_uris, plan.skip_identities, plan.skip_permanent_errors)
            for key in ("listed", "unchanged", "unchanged_permanent_errors"):
                counts[key] += dropped[key]
            counts["kept"] += kept.num_rows
        seconds = time.perf_counter() - started
        result.update(skip_seconds=round(seconds, 3), skip_us_per_object=round(1e6 * seconds / counts["listed"], 2),
                      skip_blocks=len(blocks), skip_counts=counts)
    if phase == "finish":
        rng = np.random.default_rng(7)
        commit_scan(output, FINISHING, scan_rows(FINISHING, increment(objects, 3), 3, rng))
        started = time.perf_counter()
        state.latest_state(columns=[], finishing=FINISHING)
        result["fold_seconds"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        result["count_rows"] = state.count_rows(FINISHING)["rows"]
        result["count_seconds"] = round(time.perf_counter() - started, 3)
        shutil.rmtree(output / f"{schema.SCAN_ID}={FINISHING}")
        (output / STATE_FOLDER / f"{FINISHING}.json").unlink()
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def run_phase(output: Path, phase: str, objects: int) -> dict:
    completed = subprocess.run([sys.executable, "-m", "bench.planning_scale", "--measure", phase, "--output",
                                str(output), "--objects", str(objects)], cwd=REPO, capture_output=True, text=True,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{phase} at {objects} objects failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def expected_counts(objects: int) -> tuple[int, int]:
    """(listed, new) of the listing `listing_blocks` yields."""
    new = max(1, int(objects * INCREMENT_SHARE))
    return objects + new, new


def run(sizes: list[int], workdir: Path) -> dict:
    results = []
    for objects in sizes:
        output = workdir / f"output-{objects}"
        print(f"{objects:>9} earlier objects: writing the output ...", flush=True)
        built = build_output(output, objects)
        rebuild = run_phase(output, "rebuild", objects)  # no table yet: rebuilt and written
        assert (output / LATEST_STATE_FILE).exists(), "planning did not write the latest-state table"
        plan = run_phase(output, "plan", objects)
        listed, new = expected_counts(objects)
        counts = plan["skip_counts"]
        assert counts["listed"] == listed, counts
        # Every earlier object is skipped except those whose latest row is a transient error.
        assert counts["kept"] >= new and counts["unchanged_permanent_errors"] > 0, counts
        finish = run_phase(output, "finish", objects)
        row = {"earlier_objects": objects, "earlier_scans": 1 + len(INCREMENTS), **built,
               "rebuild": rebuild, "plan": plan, "finish": finish}
        results.append(row)
        print(f"{objects:>9}: plan {plan['plan_seconds']:.2f} s ({plan['plan_us_per_object']} us/object), "
              f"skip {plan['skip_us_per_object']} us/object over {plan['skip_blocks']} blocks, "
              f"peak RSS {plan['peak_rss_mb']} MB (imports {plan['baseline_rss_mb']} MB); "
              f"rebuild {rebuild['plan_seconds']:.2f} s / {rebuild['peak_rss_mb']} MB; "
              f"fold {finish['fold_seconds']:.2f} s / {finish['peak_rss_mb']} MB, count {finish['count_seconds']:.2f} s",
              flush=True)
        shutil.rmtree(output, ignore_errors=True)
    return {
        "command": "python -m bench.planning_scale --sizes " + " ".join(map(str, sizes)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "shares": {"permanent_errors": PERMANENT_SHARE, "transient_errors": TRANSIENT_SHARE,
                   "changed_per_increment": INCREMENT_SHARE},
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=REPO / ".data" / "bench" / "planning")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--measure", choices=["rebuild", "plan", "finish"], help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--objects", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.output, args.measure, args.objects)))
        return 0
    report = run(args.sizes, args.workdir)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
