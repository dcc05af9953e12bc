"""`forgescan duplicates DEST`: group near-duplicate images (PDQ, Hamming <= 31) across every scan of an output."""

from __future__ import annotations

import argparse
import json
import sys

from forensics.perceptual_hash import MATCH_DISTANCE, MIN_QUALITY
from pipeline.duplicates import DuplicatesConfig, DuplicatesError, find_duplicate_groups
from pipeline.storage import StorageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="a scan output prefix (what was passed to scan --output)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint for the output (as for scan)")
    parser.add_argument("--max-distance", type=int, default=MATCH_DISTANCE,
                        help=f"largest Hamming distance between two PDQ hashes of one group (default {MATCH_DISTANCE})")
    parser.add_argument("--min-quality", type=int, default=MIN_QUALITY,
                        help=f"leave out hashes of lower PDQ quality: flat images all look alike (default {MIN_QUALITY})")
    parser.add_argument("--address", help="Ray cluster to run on (default: RAY_ADDRESS or a new local instance)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    config = DuplicatesConfig(output=args.output, endpoint_url=args.endpoint_url, max_distance=args.max_distance,
                              min_quality=args.min_quality, address=args.address)
    try:
        summary = find_duplicate_groups(config)
    except (DuplicatesError, StorageError) as error:
        print(f"forgescan duplicates: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.__dict__))
    else:
        print(f"{summary.hashes} hashes, {summary.pairs} matching pairs, {summary.groups} groups "
              f"({summary.grouped_images} images)\ngroups: {summary.groups_path}\npairs:  {summary.pairs_path}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(__name__))
