"""Generate the synthetic training and held-out datasets from scikit-image photographs.

    forgescan make-dataset forgery   --output .data/forgery/train   --count 2000 --seed 1 --split train
    forgescan make-dataset real-fake --output .data/realfake/heldout --count 400 --seed 2 --split heldout

`forgery` writes DEFACTO-style `images/` + `masks/` (spliced and authentic
images); `real-fake` writes `real/` + `fake/` (generated stand-ins). The
`heldout` split uses photographs that the `train` split never contains. These
are stand-ins for real datasets; see docs/training.md for DEFACTO / OpenFake.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import run_module

KINDS = ("forgery", "real-fake")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forensics.synthetic import PHOTO_SPLITS

    parser.add_argument("kind", choices=KINDS, help="forgery: images/ + masks/ for the segmenter; real-fake: real/ + fake/ for the classifier")
    parser.add_argument("--output", required=True, help="folder to write (created if missing)")
    parser.add_argument("--count", type=int, default=1000, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="use different seeds for training and held-out sets")
    parser.add_argument("--size", type=int, help="square image size in pixels (default: 256 forgery, 128 real-fake)")
    parser.add_argument("--max-size", type=int, help="real-fake: draw each image's size uniformly from [--size, --max-size]")
    parser.add_argument("--split", choices=PHOTO_SPLITS, default="train", help="which source photographs to use")
    parser.add_argument("--authentic-fraction", type=float, default=0.2, help="forgery: share of untouched images (empty masks)")


def run(args: argparse.Namespace) -> int:
    from forensics.synthetic import write_forgery_dataset, write_real_fake_dataset

    if args.count < 2:
        print(f"forgescan make-dataset: --count must be at least 2, got {args.count}.", file=sys.stderr)
        return 2
    if args.kind == "forgery":
        counts = write_forgery_dataset(args.output, args.count, args.seed, size=args.size or 256, split=args.split,
                                       authentic_fraction=args.authentic_fraction)
    else:
        counts = write_real_fake_dataset(args.output, args.count, args.seed, size=args.size or 128, split=args.split,
                                         max_size=args.max_size)
    print(json.dumps({"output": args.output, "split": args.split, "seed": args.seed, **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(run_module("jobs.make_dataset"))
