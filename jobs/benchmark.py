"""`forgescan benchmark`: bare-loop vs full-scan throughput and peak memory over growing archives.

Generates photo-like JPEGs (640-2048 px, cached under .data/bench), serves them
from a loopback S3 endpoint, measures a plain single-process loop over the
models and then the full Ray Data scan for each archive size, and writes JSON
plus a plot (default bench/results/throughput.{json,png}). A benchmark, not a
test: it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bench.end_to_end import EndToEndPlan
from pipeline.config import ANALYSIS_MODES, TRIAGE

DEFAULT_SIZES = (256, 1024, 4096)
QUICK_SIZES = (32, 64)  # --quick: a smoke run in a few minutes
QUICK_BATCH_SIZE = 16
QUICK_BARE_IMAGES = 32
QUICK_RESULTS = Path(".data/bench/quick")
# The best settings measured on the 2-CPU reference machine, then the ScanConfig defaults for comparison
# (docs/performance.md explains each knob).
DEFAULT_SETTINGS = (
    "tuned:num_model_actors=2,cpus_per_actor=0.5,decode_cpus=0.25,decode_batch_size=8,read_op_min_num_blocks=16",
    "defaults+16blocks:read_op_min_num_blocks=16",
    "defaults:",
)


def _command_line() -> str:
    if sys.argv[1:2] == ["benchmark"]:
        return "forgescan benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    return "python -m jobs.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def run_end_to_end_comparison(args: argparse.Namespace) -> int:
    from bench.end_to_end import render_table, run_end_to_end

    plan = EndToEndPlan(images=args.images, increment=args.increment, analysis=args.analysis,
                        batch_size=args.batch_size or EndToEndPlan.batch_size,
                        results_prefix=args.results or (EndToEndPlan.results_prefix if args.analysis == TRIAGE
                                                         else Path(f"{EndToEndPlan.results_prefix}_{args.analysis}")),
                        command=_command_line())
    results = run_end_to_end(plan)
    print(render_table(results))
    print(f"\nresults: {plan.results_prefix.with_suffix('.json')}")
    return 0


def _positive_integers(text: str, what: str, example: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what} of at least 1 (e.g. {example}), got {text!r}")
    return numbers


def archive_sizes(text: str) -> list[int]:
    """--sizes: comma-separated image counts."""
    return _positive_integers(text, "image counts", "64,256")


def thread_counts(text: str) -> list[int]:
    """--bare-threads: comma-separated torch thread counts."""
    return _positive_integers(text, "thread counts", "1,2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.throughput import BenchmarkPlan

    parser.add_argument("--sizes", type=archive_sizes, help=f"comma-separated archive sizes (default {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run in a few minutes: sizes {','.join(map(str, QUICK_SIZES))}, batch "
                             f"{QUICK_BATCH_SIZE}, one setting, results under {QUICK_RESULTS.parent}/")
    parser.add_argument("--batch-size", type=int,
                        help=f"images per model call, bare loop and scan alike (default {BenchmarkPlan.batch_size})")
    parser.add_argument("--setting", action="append", dest="settings", metavar="NAME:KNOB=V,...",
                        help="a pipeline setting to measure, e.g. 'two-actors:num_model_actors=2,cpus_per_actor=0.75,"
                             "decode_cpus=0.25'; repeat to compare; knobs are ScanConfig fields "
                             f"(default: {' and '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--warmup-images", type=int, help="size of the warm-up scan subtracted for steady state (default: one batch)")
    parser.add_argument("--bare-images", type=int, default=BenchmarkPlan.bare_images,
                        help=f"images in the bare loop (default {BenchmarkPlan.bare_images}; it does not depend on archive size)")
    parser.add_argument("--bare-threads", type=thread_counts, default=None,
                        help="torch thread counts to try in the bare loop, e.g. 1,2; the fastest is the reference "
                             "(default: 1 and all cores)")
    parser.add_argument("--ray-cpus", type=int, help="logical CPUs of the local Ray instance (default: all cores)")
    parser.add_argument("--results", type=Path, help=f"results path prefix (default {BenchmarkPlan.results_prefix}, "
                                                     f"or {QUICK_RESULTS} with --quick)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    end_to_end = parser.add_argument_group(
        "end to end", "process start to exit on one local folder: bare loop, the Ray Data docs pipeline, "
                      "`forgescan scan` with its fixed costs, and a nightly increment (bench/end_to_end.py)")
    end_to_end.add_argument("--end-to-end", action="store_true", help="run this comparison instead of the archive-size sweep")
    end_to_end.add_argument("--images", type=int, default=EndToEndPlan.images,
                            help=f"images in the folder (default {EndToEndPlan.images})")
    end_to_end.add_argument("--increment", type=int, default=EndToEndPlan.increment,
                            help=f"new images added for the nightly-increment scan (default {EndToEndPlan.increment})")
    end_to_end.add_argument("--analysis", choices=ANALYSIS_MODES, default=EndToEndPlan.analysis,
                            help="the scan's analysis mode; the docs pipeline runs only beside triage, its equal in work "
                                 f"(default {EndToEndPlan.analysis})")


def run(args: argparse.Namespace) -> int:
    if args.end_to_end:
        return run_end_to_end_comparison(args)
    from bench.throughput import BenchmarkPlan, PipelineSetting, render_table, run_benchmark

    batch_size = args.batch_size or (QUICK_BATCH_SIZE if args.quick else BenchmarkPlan.batch_size)
    try:
        chosen = args.settings or (DEFAULT_SETTINGS[1:2] if args.quick else DEFAULT_SETTINGS)
        settings = [PipelineSetting.parse(text) for text in chosen]
    except ValueError as error:
        print(f"forgescan benchmark: {error}", file=sys.stderr)
        return 2
    plan = BenchmarkPlan(
        sizes=args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES),
        settings=settings,
        batch_size=batch_size,
        warmup_images=args.warmup_images or batch_size,
        bare_images=min(args.bare_images, QUICK_BARE_IMAGES) if args.quick else args.bare_images,
        bare_torch_threads=tuple(args.bare_threads or sorted({1, os.cpu_count() or 1})),
        ray_cpus=args.ray_cpus,
        results_prefix=args.results or (QUICK_RESULTS if args.quick else BenchmarkPlan.results_prefix),
        show_progress=not args.no_progress,
        command=_command_line(),
    )
    results = run_benchmark(plan)
    print(render_table(results))
    print(f"\nresults: {plan.results_prefix.with_suffix('.json')} and {plan.results_prefix.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.benchmark"))
