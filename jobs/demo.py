"""`forgescan demo`: scan the bundled sample archive on a local Ray instance and show what came out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forensics.synthetic import write_sample_archive
from pipeline.config import ScanConfig
from jobs.scan import run_and_report

DEFAULT_WORKDIR = Path(".data/demo")
# Sample images are 320 px: at native resolution the segmenter runs 9 overlapping tiles per image,
# which keeps the demo to about a minute on two CPU cores (a 2 MP photo needs ~200 tiles).
SAMPLE_IMAGE_SIZE = 320


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"where the sample archive and results go (default {DEFAULT_WORKDIR})")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    archive = args.workdir / "sample-archive"
    if not (archive / "images").exists():
        objects = write_sample_archive(archive, size=SAMPLE_IMAGE_SIZE)
        print(f"wrote the sample archive: {len(objects)} images under {archive / 'images'} "
              f"(ground-truth masks in {archive / 'ground_truth'})")
    output = args.workdir / "results"
    summary = run_and_report(ScanConfig(source=str(archive / "images"), output=str(output), batch_size=args.batch_size,
                                        full=True, show_progress=not args.no_progress))
    if summary is None:
        return 2
    print_findings(output, summary.scan_id)
    print_scorecard(archive, output, summary.scan_id)
    print_provenance(output, summary.scan_id)
    from jobs.cli import main as forgescan

    if forgescan(["duplicates", str(output)]) == 0:
        print_duplicate_groups(output)

    forgescan(["report", str(output), "--scan-id", summary.scan_id, "--limit", "24"])
    return 0


def print_findings(output: Path, scan_id: str, limit: int = 8) -> None:
    import duckdb

    query = f"""
        SELECT regexp_replace(uri, '.*/images/', '') AS object, verdict, round(ai_score, 3) AS ai,
               round(manipulation_score, 3) AS manip, round(mask_area, 3) AS area
        FROM read_parquet('{output}/scan_id=*/*.parquet', hive_partitioning=1)
        WHERE scan_id = '{scan_id}' ORDER BY manipulation_score DESC NULLS LAST LIMIT {limit}"""
    print("\nmost suspicious objects (DuckDB over the output):")
    print(duckdb.sql(query))
    print("query the results yourself:\n  .venv/bin/python -c \"import duckdb; print(duckdb.sql(\\\"SELECT verdict, count(*) "
          f"FROM read_parquet('{output}/scan_id=*/*.parquet', hive_partitioning=1) GROUP BY 1\\\"))\"")


def print_provenance(output: Path, scan_id: str) -> None:
    """What the files declare about themselves: AI source, content-credential state, generator hint."""
    import duckdb

    query = f"""
        SELECT regexp_replace(uri, '.*/images/', '') AS object, verdict,
               coalesce(provenance.c2pa_digital_source_type, provenance.xmp_digital_source_type) AS declared_source,
               provenance.c2pa_validation AS credentials, provenance.generator_hint AS generator
        FROM read_parquet('{output}/scan_id=*/*.parquet', hive_partitioning=1, union_by_name=1)
        WHERE scan_id = '{scan_id}' AND (provenance.declared_ai OR provenance.c2pa_present) ORDER BY object"""
    print("\ndeclared provenance (C2PA content credentials, XMP digital source type, generation parameters):")
    print(duckdb.sql(query))


def print_duplicate_groups(output: Path) -> None:
    import duckdb

    query = f"""
        SELECT group_id, group_size, string_agg(regexp_replace(uri, '.*/images/', ''), ', ' ORDER BY uri) AS members
        FROM read_parquet('{output}/_forgescan/duplicates/groups.parquet') GROUP BY 1, 2 ORDER BY 2 DESC, 3"""
    print("\nnear-duplicate groups (PDQ Hamming distance <= 31; `forgescan duplicates` wrote them):")
    print(duckdb.sql(query))


def print_scorecard(archive: Path, output: Path, scan_id: str) -> None:
    """How the verdicts and masks compare with the sample archive's known truth."""
    from collections import Counter

    import numpy as np
    import pyarrow.dataset as pads
    from PIL import Image

    from forensics.masks import decode_mask

    rows = [r for r in pads.dataset(str(output), partitioning="hive").to_table().to_pylist() if r["scan_id"] == scan_id]
    verdicts: dict[str, Counter] = {}
    intersection_over_union = []
    for row in rows:
        relative = row["uri"].split("/images/", 1)[1]
        kind = relative.split("/", 1)[0]
        verdicts.setdefault(kind, Counter())[row["verdict"]] += 1
        if kind == "spliced" and row["mask_rle"] is not None:
            truth = np.asarray(Image.open(archive / "ground_truth" / (Path(relative).stem + ".png"))) > 127
            predicted = decode_mask(row["mask_rle"]).astype(bool)
            union = np.logical_or(truth, predicted).sum()
            intersection_over_union.append(np.logical_and(truth, predicted).sum() / union if union else 1.0)
    print("\nscorecard against the sample archive's ground truth:")
    for kind, counts in sorted(verdicts.items()):
        print(f"  {kind:<10} " + ", ".join(f"{verdict} {count}" for verdict, count in counts.most_common()))
    if intersection_over_union:
        print(f"  spliced masks: mean IoU with the true pasted region {np.mean(intersection_over_union):.2f} "
              f"over {len(intersection_over_union)} images")


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.demo"))
