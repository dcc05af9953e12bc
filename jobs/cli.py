"""The `forgescan` command: one sub-command per job module.

Each job module exposes `add_arguments(parser)` and `run(args) -> int`, so the
same code runs as `forgescan <job>` and as `python -m jobs.<job>` (what
`ray job submit` calls).
"""

from __future__ import annotations

import argparse
import importlib
import sys

JOBS = {
    "scan": ("jobs.scan", "Scan an archive and write verdicts and masks to Parquet."),
    "serve": ("jobs.serve", "Answer single-image checks over HTTP (Ray Serve + FastAPI) with the scan's models."),
    "report": ("jobs.report", "Write an HTML report of a scan output: counts, histograms, flagged images with masks."),
    "summary": ("jobs.summary", "Print the counts of every scan in an output and of the archive's current state."),
    "duplicates": ("jobs.duplicates", "Group near-duplicate images (PDQ hashes) across every scan of an output."),
    "demo": ("jobs.demo", "Scan the bundled sample archive on a local Ray instance."),
    "train": ("jobs.train", "Train the classifier or the segmenter (Ray Train)."),
    "evaluate": ("jobs.evaluate", "Evaluate checkpoints on a labelled set; JSON + pictures."),
    "calibrate": ("jobs.calibrate", "Fit temperature and thresholds; write them into the model card."),
    "make-dataset": ("jobs.make_dataset", "Generate the synthetic datasets from real photographs; fetch the package photographs."),
    "benchmark": ("jobs.benchmark", "Measure bare-loop vs full-pipeline throughput and memory."),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every sub-command with its arguments; with `only`, just that one's arguments are loaded
    (importing every job pulls in torch, Ray Serve and FastAPI: seconds on each start)."""
    parser = argparse.ArgumentParser(prog="forgescan", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in JOBS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            commands._name_parser_map.pop(name, None)
            commands._choices_actions = [a for a in commands._choices_actions if a.dest != name]
            continue
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(only=command if command in JOBS else "").parse_args(argv)
    return int(args.handler(args) or 0)


def run_module(module_name: str, argv: list[str] | None = None) -> int:
    """`python -m jobs.<name>` support: parse that job's own arguments and run it."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m {module_name}", description=(module.__doc__ or "").splitlines()[0])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
