"""End to end, process start to exit: the bare loop, the Ray-docs pipeline and `forgescan scan` on one folder.

Each contender runs as its own process on the same images, cards and weights,
timed from process start to exit (its last file written):

1. **bare loop** (`python -m bench.bare_loop`): one process, no Ray, no output
   files: the limit orchestration is measured against;
2. **docs pipeline** (`python -m bench.docs_pipeline`): what a user writes
   from Ray Data's batch-inference docs (read_images resized on read, one
   actor with both models, masks at model size, write_parquet);
3. **forgescan scan**: everything a scan does (sha256, error rows, provenance,
   PDQ hashes, masks at the original size, atomic commits, resume state).

Then the nightly increment: `increment` new images are added to the folder and
the same `forgescan scan` runs again (incremental: it lists everything, skips
what is unchanged and processes the new ones). Its run is also what a scan
pays whatever the archive size, so the steady rate of each Ray contender is
(N - n) / (T_N - T_n) for its run on N images and on n. forgescan's fixed
costs come from its own per-phase timings (the manifest's `timings`); what is
left of the wall time is process start-up (imports) and exit (Ray's shutdown).

A benchmark, not a test: it reports figures and never asserts on them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import TRIAGE

WORK_DIRECTORY = Path(".data/bench/end_to_end")


@dataclass(frozen=True)
class EndToEndPlan:
    images: int = 600
    increment: int = 5
    analysis: str = TRIAGE
    batch_size: int = 32
    results_prefix: Path = Path("bench/results/end_to_end")
    command: str = ""


def _run(label: str, argv: list[str], log: Path) -> float:
    """Run one contender to completion; its wall seconds (its output goes to `log`)."""
    print(f"  {label}: {' '.join(argv[1:] if argv[0] == sys.executable else argv)}", flush=True)
    started = time.monotonic()
    with log.open("w") as sink:
        completed = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{label} exited with {completed.returncode}; see {log}")
    print(f"    {seconds:.1f} s", flush=True)
    return seconds


def _link_images(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = folder / path.name
        if not target.exists():
            os.link(path, target)


def _scan_timings(output: Path) -> list[dict]:
    """Every scan's manifest timings in `output`, oldest first."""
    from pipeline.state import ScanState
    from pipeline.storage import parse_location

    manifests = ScanState(parse_location(str(output)), None, {}).manifests()
    return [{"scan_id": m.scan_id, "mode": m.mode, "counts": m.counts, "timings": m.timings}
            for m in sorted(manifests, key=lambda m: m.started_at)]


def _steady(images: int, seconds: float, small_images: int, small_seconds: float) -> float | None:
    return round((images - small_images) / (seconds - small_seconds), 2) if seconds > small_seconds else None


def run_end_to_end(plan: EndToEndPlan) -> dict:
    from bench.images import cached_images, describe_images

    work = WORK_DIRECTORY / plan.analysis
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    paths = cached_images(plan.images + plan.increment)
    archive, small = work / "archive", work / "small"
    _link_images(paths[: plan.images], archive)
    _link_images(paths[plan.images :], small)
    python, batch = sys.executable, str(plan.batch_size)
    forgescan = [python, "-m", "jobs.scan", str(archive), "--output", str(work / "forgescan-out"), "--analysis",
                 plan.analysis, "--batch-size", batch, "--no-progress", "--address", "local"]
    print(f"end-to-end benchmark: {plan.images} images + an increment of {plan.increment}, {plan.analysis} analysis", flush=True)

    wall = {}
    wall["bare_loop"] = _run("bare loop", [python, "-m", "bench.bare_loop", str(archive), "--analysis", plan.analysis,
                                           "--batch-size", batch], work / "bare_loop.log")
    bare = json.loads((work / "bare_loop.log").read_text().strip().splitlines()[-1])
    if plan.analysis == TRIAGE:  # the docs pipeline resizes on read: equal work only against triage
        wall["docs_pipeline"] = _run("docs pipeline", [python, "-m", "bench.docs_pipeline", str(archive),
                                                       str(work / "docs-out"), "--batch-size", batch], work / "docs.log")
        wall["docs_pipeline_increment"] = _run("docs pipeline on the increment alone", [
            python, "-m", "bench.docs_pipeline", str(small), str(work / "docs-small-out"), "--batch-size", batch],
            work / "docs-small.log")
    wall["forgescan"] = _run("forgescan scan", forgescan, work / "forgescan.log")
    _link_images(paths[plan.images :], archive)  # the nightly increment: new objects in the same folder
    wall["forgescan_increment"] = _run("forgescan scan, nightly increment", forgescan, work / "forgescan-increment.log")
    full_scan, increment_scan = _scan_timings(work / "forgescan-out")[-2:]

    def fixed_costs(scan: dict, seconds: float) -> dict:
        from pipeline.scan import SCAN_PHASES

        phases = {phase: scan["timings"][phase] for phase in SCAN_PHASES if phase in scan["timings"]}
        phases["process_start_and_exit"] = round(seconds - sum(phases.values()), 2)
        return phases

    contenders = {
        "bare_loop": {"seconds": round(wall["bare_loop"], 2), "images_per_s": round(plan.images / wall["bare_loop"], 2),
                      "steady_images_per_s": bare["images_per_s"], "model_ready_s": bare["model_ready_s"],
                      "phase_ms_per_image": bare["phase_ms_per_image"], "torch_threads": bare["torch_threads"]},
        "forgescan": {"seconds": round(wall["forgescan"], 2), "images_per_s": round(plan.images / wall["forgescan"], 2),
                      "steady_images_per_s": _steady(plan.images, full_scan["timings"]["pipeline"], plan.increment,
                                                     increment_scan["timings"]["pipeline"]),
                      "fixed_costs_s": fixed_costs(full_scan, wall["forgescan"]), "counts": full_scan["counts"]},
    }
    if "docs_pipeline" in wall:
        contenders["docs_pipeline"] = {
            "seconds": round(wall["docs_pipeline"], 2), "images_per_s": round(plan.images / wall["docs_pipeline"], 2),
            "steady_images_per_s": _steady(plan.images, wall["docs_pipeline"], plan.increment, wall["docs_pipeline_increment"]),
            "seconds_on_the_increment_alone": round(wall["docs_pipeline_increment"], 2)}
    results = {
        "command": plan.command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "images": describe_images(paths[: plan.images]), "increment": plan.increment, "analysis": plan.analysis,
        "batch_size": plan.batch_size, "models": bare["models"],
        "contenders": contenders,
        "nightly_increment": {"seconds": round(wall["forgescan_increment"], 2), "counts": increment_scan["counts"],
                              "fixed_costs_s": fixed_costs(increment_scan, wall["forgescan_increment"])},
        "method": "each contender is its own process, timed from start to exit; steady = (N - n) / (T_N - T_n) with "
                  "the increment's run as T_n (forgescan: the pipeline phase of each run); bare loop: its loop alone",
    }
    plan.results_prefix.parent.mkdir(parents=True, exist_ok=True)
    plan.results_prefix.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def render_table(results: dict) -> str:
    rows = ["| pipeline | seconds | images/s end to end | steady images/s |", "|---|---|---|---|"]
    names = {"bare_loop": "bare loop (one process, no Ray, no files)", "docs_pipeline": "Ray Data docs pipeline",
             "forgescan": "`forgescan scan`"}
    for key in ("bare_loop", "docs_pipeline", "forgescan"):
        if key in results["contenders"]:
            entry = results["contenders"][key]
            rows.append(f"| {names[key]} | {entry['seconds']:.1f} | {entry['images_per_s']:.1f} | {entry['steady_images_per_s']} |")
    increment = results["nightly_increment"]
    rows.append(f"| `forgescan scan`, nightly increment of {results['increment']} new images | {increment['seconds']:.1f} | | |")
    fixed = results["contenders"]["forgescan"]["fixed_costs_s"]
    lines = ["\n".join(rows), "", "forgescan fixed costs and pipeline (s): " + ", ".join(f"{k} {v}" for k, v in fixed.items()),
             "nightly increment (s): " + ", ".join(f"{k} {v}" for k, v in increment["fixed_costs_s"].items())]
    return "\n".join(lines)
