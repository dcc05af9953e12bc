"""How `forgescan report` and `forgescan summary` scale: a real scan's rows replicated to N rows, time and peak memory.

    python -m bench.report_scale --from-output .data/demo/results --rows 1000000

Takes the rows of the latest complete scan under `--from-output` (a real
scan, e.g. `forgescan demo`'s), writes them again and again under one new
scan in `--workdir` (each copy's URIs suffixed `#copy<i>` so every row is a
distinct object; the first copy keeps the real URIs, so its images are found),
then runs `forgescan summary` and `forgescan report` (scan view, then the
default archive view) on it as `python -m jobs.<name>`, each in a fresh
process, and records wall time and the peak resident memory of that process
(the first run, `--help`, measures the imports alone). Results: `bench/results/report_scale.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.state import COMPLETE, STATE_FOLDER, ScanState
from pipeline.storage import parse_location

ROWS_PER_FILE = 5000


def replicate(source_output: str, rows: int, destination: Path) -> dict:
    state = ScanState(parse_location(source_output), None, None)
    manifest = next(m for m in reversed(state.manifests()) if m.state == COMPLETE)
    table = pads.dataset(f"{parse_location(source_output).path}/scan_id={manifest.scan_id}", format="parquet").to_table()
    scan_id = "scan-20990101T000000Z-bench0"
    folder = destination / f"scan_id={scan_id}"
    folder.mkdir(parents=True, exist_ok=True)
    copies = -(-rows // table.num_rows)
    per_file = max(1, ROWS_PER_FILE // table.num_rows)
    written = 0
    for first in range(0, copies, per_file):
        parts = []
        for copy in range(first, min(copies, first + per_file)):
            uris = table.column("uri") if copy == 0 else pc.binary_join_element_wise(table.column("uri"), f"#copy{copy}", "")
            part = table.set_column(table.schema.get_field_index("uri"), "uri", uris)
            parts.append(part.set_column(table.schema.get_field_index("scan_id"), "scan_id",
                                         pa.array([scan_id] * part.num_rows, pa.string())))
        block = pa.concat_tables(parts).slice(0, rows - written)
        pq.write_table(block, folder / f"part-{first:08d}.parquet", compression="zstd")
        written += block.num_rows
    record = json.loads(manifest.to_json())
    record.update(scan_id=scan_id, output=str(destination), counts={}, files=len(list(folder.glob("*.parquet"))))
    (destination / STATE_FOLDER).mkdir(parents=True, exist_ok=True)
    (destination / STATE_FOLDER / f"{scan_id}.json").write_text(json.dumps(record, indent=2))
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    return {"rows": written, "files": record["files"], "parquet_bytes": size, "source_scan": manifest.scan_id}


def measure(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MiB) of one command, from the rusage of its own process."""
    import tempfile

    with tempfile.TemporaryFile("w+") as log:
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
        log.seek(0)
        output = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output}")
    return {"command": "python " + " ".join(command[1:]), "seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "output_tail": output.strip().splitlines()[-3:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-output", required=True, help="output of a real scan (e.g. forgescan demo's)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path(".data/bench/report-scale"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/report_scale.json"))
    args = parser.parse_args(argv)
    output = args.workdir / "out"
    if not output.exists():
        built = replicate(args.from_output, args.rows, output)
    else:
        files = list(output.glob("scan_id=*/*.parquet"))
        built = {"rows": pads.dataset(str(output), partitioning="hive").count_rows(), "files": len(files),
                 "parquet_bytes": sum(p.stat().st_size for p in files), "reused": True}
    dataset = pads.dataset(str(output), partitioning="hive")
    built["arrow_bytes_if_loaded_whole"] = round(dataset.head(1000).nbytes / 1000 * built["rows"])
    python = [sys.executable, "-m"]
    runs = [
        measure(python + ["jobs.summary", "--help"]),  # the imports alone: the baseline of the rows below
        measure(python + ["jobs.summary", str(output)]),
        measure(python + ["jobs.report", str(output), "--view", "scan", "--html", str(args.workdir / "scan.html")]),
        measure(python + ["jobs.report", str(output), "--html", str(args.workdir / "archive.html")]),
    ]
    result = {"built": built, "runs": runs, "cpus": os.cpu_count()}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
