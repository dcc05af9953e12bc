"""Orchestrates one benchmark run: images -> loopback S3 -> bare loop -> pipeline scans per size -> JSON + plot.

Steady-state pipeline throughput is measured by difference: every pipeline
setting first scans a small warm-up archive (W images), then each archive of
N images; (N - W) / (T_N - T_W) removes what every scan pays once -- actor
start-up and model build, listing, manifests, filling and draining the
pipeline -- and leaves the rate at which images flow once it runs. Before the
warm-up scan, an untimed priming scan starts Ray's pool of task workers, so
the warm-up does not pay that twice. Ray's own start-up is reported
separately. End-to-end rates (N / T_N), and the marginal rate between
consecutive archive sizes ((N2 - N1) / (T2 - T1)), are reported next to it.
CPU seconds per image (all forgescan processes, same difference) are the
figure least disturbed by other load on a shared machine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.bare_loop import run_bare_loop_in_child
from bench.images import cached_images, describe_images, upload_archives
from bench.process_tree import ProcessTreeSampler

SCAN_KNOBS = ("num_model_actors", "cpus_per_actor", "decode_cpus", "decode_batch_size", "gpus_per_actor", "batch_size")
# Ray instance knobs (not ScanConfig): logical CPUs, and how many idle workers Ray keeps before killing them
# (RAY_num_workers_soft_limit; default = CPUs) -- a killed worker must re-import torch when the next task comes.
RAY_KNOBS = ("ray_cpus", "ray_worker_soft_limit")
# Ray Data knobs set on the driver's DataContext for the scan: the listing is one read task, and Ray Data splits
# its output into read_op_min_num_blocks blocks (default 200), i.e. a task per 1-5 objects on small archives.
DATA_CONTEXT_KNOBS = ("read_op_min_num_blocks",)
PIPELINE_KNOBS = SCAN_KNOBS + RAY_KNOBS + DATA_CONTEXT_KNOBS
WORK_DIRECTORY = Path(".data/bench")


@dataclass(frozen=True)
class PipelineSetting:
    """A named set of ScanConfig knobs to measure, e.g. `two-actors:num_model_actors=2,cpus_per_actor=0.75`."""

    name: str
    knobs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "PipelineSetting":
        name, _, spec = text.rpartition(":") if ":" in text else ("", "", text)
        knobs = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, _, value = item.partition("=")
            if key not in PIPELINE_KNOBS:
                raise ValueError(f"Unknown pipeline knob `{key}` in `{text}`; valid knobs: {list(PIPELINE_KNOBS)}")
            knobs[key] = float(value) if "." in value else int(value)
        return cls(name=name or (spec or "defaults"), knobs=knobs)


@dataclass(frozen=True)
class BenchmarkPlan:
    sizes: list[int]
    settings: list[PipelineSetting]
    batch_size: int = 32
    warmup_images: int = 32
    bare_images: int = 96  # the bare loop's rate does not depend on the archive's size
    bare_torch_threads: tuple[int, ...] = (1,)
    ray_cpus: int | None = None
    results_prefix: Path = Path("bench/results/throughput")
    show_progress: bool = True
    command: str = ""


def scan_input_specs() -> list:
    """The decode specs a scan would use: from the bundled checkpoints' cards, else the default cards."""
    from forensics.model_card import CLASSIFIER, SEGMENTER
    from pipeline.scan import load_model_payload

    cards = [load_model_payload(None, kind)[1] for kind in (CLASSIFIER, SEGMENTER)]
    return [list(spec) for spec in dict.fromkeys(tuple(getattr(c, "input_spec", c.input_size)) for c in cards)]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_facts() -> dict:
    import ray
    import torch

    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from bench.process_tree import psutil

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
    }


def cpu_pressure() -> dict | None:
    """Linux PSI: % of time some runnable task waited for a CPU (10 s / 60 s / 300 s averages); high = contended."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return {key: float(value) for key, value in (part.split("=") for part in line.split()[1:4])}


def run_pipeline_scan(source: str, output: Path, endpoint: str, batch_size: int, setting: PipelineSetting,
                      show_progress: bool) -> dict:
    """One full scan (S3 listing -> Parquet on local disk) with the setting's knobs; returns its timing."""
    from pipeline.config import ScanConfig
    from pipeline.scan import run_scan

    shutil.rmtree(output, ignore_errors=True)
    knobs = {"batch_size": batch_size, **{k: v for k, v in setting.knobs.items() if k in SCAN_KNOBS}}
    config = ScanConfig(source=source, output=str(output), endpoint_url=endpoint, full=True,
                        show_progress=show_progress, **knobs)
    import ray

    context = ray.data.DataContext.get_current()
    saved = {knob: getattr(context, knob) for knob in DATA_CONTEXT_KNOBS}
    for knob in DATA_CONTEXT_KNOBS:
        if knob in setting.knobs:
            setattr(context, knob, setting.knobs[knob])
    started = time.perf_counter()
    try:
        summary = run_scan(config)
    finally:
        for knob, value in saved.items():
            setattr(context, knob, value)
    seconds = time.perf_counter() - started
    shutil.rmtree(output, ignore_errors=True)
    return {"images": summary.processed, "ok": summary.ok, "errors": summary.errors, "seconds": round(seconds, 2),
            "images_per_s": round(summary.processed / seconds, 3)}


def forgescan_cpu_seconds(window: dict) -> float:
    """CPU seconds a scan used: driver, Ray workers and Ray daemons (not the S3 server, not the bare loop)."""
    return sum(window["cpu_seconds"][group] for group in ("driver", "ray_workers", "ray_system"))


def start_ray(num_cpus: int | None, worker_soft_limit: int | None = None) -> float:
    """Start a new local Ray instance (never attach to another one); returns the seconds it took."""
    import logging

    import ray

    started = time.perf_counter()
    system_config = {"num_workers_soft_limit": int(worker_soft_limit)} if worker_soft_limit else None
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=True, _system_config=system_config)
    return time.perf_counter() - started


def run_benchmark(plan: BenchmarkPlan) -> dict:
    from pipeline.local_s3 import FAKE_CREDENTIALS, loopback_s3

    os.environ.update(FAKE_CREDENTIALS)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    sizes = sorted(set(plan.sizes))
    needed = max(sizes + [plan.warmup_images, plan.bare_images])
    log(f"preparing {needed} benchmark JPEGs under {WORK_DIRECTORY}")
    paths = cached_images(needed, progress=plan.show_progress)
    results: dict = {
        "command": plan.command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_facts(),
        "cpu_pressure_at_start": cpu_pressure(),
        "model_input_specs": scan_input_specs(),
        "images": describe_images(paths[: max(sizes)]),
        "plan": {"sizes": sizes, "batch_size": plan.batch_size, "warmup_images": plan.warmup_images,
                 "bare_images": min(plan.bare_images, max(sizes)), "ray_cpus": plan.ray_cpus or os.cpu_count()},
        "method": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
    }
    with ProcessTreeSampler() as resources, loopback_s3() as endpoint:
        bare_count = min(plan.bare_images, max(sizes))
        bare_runs = []
        for threads in plan.bare_torch_threads:
            log(f"bare loop: {bare_count} images, batch {plan.batch_size}, one process, {threads} torch threads")
            resources.reset()
            bare = run_bare_loop_in_child(paths[:bare_count], plan.batch_size, threads)
            bare["resources"] = resources.window()
            bare["peak_private_mib"] = bare["resources"]["bare_loop_peak_mib"]
            bare_runs.append(bare)
            log(f"bare loop: {bare['images_per_s']:.2f} images/s, {bare['cpu_seconds_per_image']} CPU s/image with "
                f"{bare['torch_threads']} torch threads; ms/image {bare['phase_ms_per_image']}")
        bare = max(bare_runs, key=lambda run: run["images_per_s"])
        results["bare_loop"] = bare
        results["bare_loop_runs"] = bare_runs

        archives = upload_archives(endpoint, paths, sorted(set(sizes + [plan.warmup_images])), plan.show_progress)
        runs = []
        ray_instance = None
        for setting in plan.settings:
            wanted = (setting.knobs.get("ray_cpus", plan.ray_cpus or os.cpu_count()), setting.knobs.get("ray_worker_soft_limit"))
            if wanted != ray_instance:
                import ray

                ray.shutdown()
                startup = round(start_ray(*wanted), 2)
                results.setdefault("ray_startup_s", startup)
                ray_instance = wanted
                log(f"ray started with {wanted[0]} logical CPUs (worker soft limit {wanted[1] or 'default'}) in {startup} s")
            output = WORK_DIRECTORY / "scan-output" / setting.name.replace("/", "_")
            log(f"[{setting.name}] priming scan of {plan.warmup_images} images (starts Ray's worker pool; not timed)")
            run_pipeline_scan(archives[plan.warmup_images], output, endpoint, plan.batch_size, setting, plan.show_progress)
            log(f"[{setting.name}] warm-up scan of {plan.warmup_images} images")
            resources.reset()
            warmup = run_pipeline_scan(archives[plan.warmup_images], output, endpoint, plan.batch_size, setting,
                                       plan.show_progress)
            warmup["cpu_seconds"] = forgescan_cpu_seconds(resources.window())
            log(f"[{setting.name}] warm-up took {warmup['seconds']} s")
            for size in sizes:
                log(f"[{setting.name}] scan of {size} images")
                resources.reset()
                scan = run_pipeline_scan(archives[size], output, endpoint, plan.batch_size, setting, plan.show_progress)
                peaks = resources.window()
                steady = steady_cpu = None
                if size >= 4 * warmup["images"] and scan["seconds"] > warmup["seconds"]:  # else fixed costs swamp it
                    steady = (size - warmup["images"]) / (scan["seconds"] - warmup["seconds"])
                    steady_cpu = (forgescan_cpu_seconds(peaks) - warmup["cpu_seconds"]) / (size - warmup["images"])
                run = {"setting": setting.name, "knobs": {"batch_size": plan.batch_size, **setting.knobs}, "size": size,
                       **scan, "warmup_seconds": warmup["seconds"],
                       "steady_images_per_s": round(steady, 3) if steady else None,
                       "steady_ratio_to_bare": round(steady / bare["images_per_s"], 3) if steady else None,
                       "end_to_end_ratio_to_bare": round(scan["images_per_s"] / bare["images_per_s"], 3),
                       "steady_cpu_seconds_per_image": round(steady_cpu, 3) if steady_cpu else None,
                       "cpu_efficiency_vs_bare": round(bare["cpu_seconds_per_image"] / steady_cpu, 3) if steady_cpu else None,
                       "memory": peaks, "cpu_pressure": cpu_pressure()}
                previous = next((r for r in reversed(runs) if r["setting"] == setting.name), None)
                if previous and scan["seconds"] > previous["seconds"]:  # slope between consecutive archive sizes
                    run["marginal_images_per_s"] = round((size - previous["size"]) / (scan["seconds"] - previous["seconds"]), 3)
                runs.append(run)
                log(f"[{setting.name}] {size} images: {scan['seconds']} s, end-to-end {scan['images_per_s']:.2f}/s, "
                    f"steady {run['steady_images_per_s']}/s (ratio {run['steady_ratio_to_bare']}); "
                    f"CPU {run['steady_cpu_seconds_per_image']} s/image; driver {peaks['driver_peak_mib']} MiB, "
                    f"workers {peaks['ray_workers_peak_mib']} MiB; other processes used {peaks['other_processes_cores']} cores")
                write_results(results | {"pipeline": runs}, plan.results_prefix, plot=False)
        results["pipeline"] = runs
    import ray

    ray.shutdown()
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["cpu_pressure_at_end"] = cpu_pressure()
    write_results(results, plan.results_prefix, plot=True)
    return results


def write_results(results: dict, prefix: Path, plot: bool) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    staging = prefix.with_suffix(".json.tmp")
    staging.write_text(json.dumps(results, indent=2) + "\n")
    staging.replace(prefix.with_suffix(".json"))
    if plot and results.get("pipeline"):
        plot_results(results, prefix.with_suffix(".png"))


def workers_of_this_scan_mib(memory: dict) -> float:
    """Ray worker memory without ListingCounter actors left over from earlier scans in the same Ray session.

    run_scan starts one counter actor per scan and does not kill it; each holds ~360 MiB (pipeline.stages
    imports torch), so in a benchmark that runs many scans in one session they pile up. One counter is kept.
    """
    count, mib = memory.get("worker_titles_at_peak", {}).get("ray::ListingCounter", [0, 0.0])
    leftover = mib - mib / count if count > 1 else 0.0
    return round(memory["ray_workers_peak_mib"] - leftover, 1)


def plot_results(results: dict, path: Path) -> None:
    """Throughput and peak memory against archive size, one line per pipeline setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["pipeline"]
    settings = list(dict.fromkeys(run["setting"] for run in runs))
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90)
    sizes = results["plan"]["sizes"]
    speed.axhline(results["bare_loop"]["images_per_s"], color="black", linestyle="--", label="bare loop")
    for setting in settings:
        mine = [run for run in runs if run["setting"] == setting]
        line, = speed.plot([r["size"] for r in mine], [r["steady_images_per_s"] or float("nan") for r in mine],
                           marker="o", label=f"{setting} (steady)")
        for r in mine:  # how many cores other processes took meanwhile: the machine was shared
            if r["steady_images_per_s"]:
                speed.annotate(f"{r['memory']['other_processes_cores']:.1f}", (r["size"], r["steady_images_per_s"]),
                               textcoords="offset points", xytext=(4, 4), fontsize=6, color=line.get_color())
        speed.plot([r["size"] for r in mine], [r["images_per_s"] for r in mine], marker=".", linestyle=":",
                   color=line.get_color(), label=f"{setting} (end-to-end)")
        memory.plot([r["size"] for r in mine], [workers_of_this_scan_mib(r["memory"]) for r in mine], marker="o",
                    color=line.get_color(), label=f"{setting}: Ray workers of the scan")
        memory.plot([r["size"] for r in mine], [r["memory"]["driver_peak_mib"] for r in mine], marker="s",
                    linestyle="--", color=line.get_color(), label=f"{setting}: driver")
    for axis in (speed, memory):
        axis.set_xscale("log")
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.minorticks_off()
        axis.set_xlabel("archive size (images)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="lower right")
    speed.set_ylabel("images / s")
    speed.set_ylim(bottom=0)
    speed.set_title("throughput", fontsize=10)
    memory.set_ylabel("peak private RSS (MiB)")
    memory.set_ylim(bottom=0)
    memory.set_title("peak memory", fontsize=10)
    machine = results["machine"]
    specs = results.get("model_input_specs") or results["bare_loop"].get("models", {}).get("input_specs", "?")
    figure.suptitle(f"forgescan benchmark: {machine['cpus']} CPU{', ' + machine['gpu'] if machine['gpu'] else ''}, "
                    f"batch {results['plan']['batch_size']}, model inputs {specs}; "
                    f"small numbers: cores used by other processes", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def render_table(results: dict) -> str:
    bare = results["bare_loop"]
    lines = [
        f"bare loop ({run['torch_threads']} torch threads): {run['images_per_s']:.2f} images/s, "
        f"{run['cpu_seconds_per_image']} CPU s/image, peak private RSS {run['peak_private_mib']:.0f} MiB, "
        f"other processes used {run['resources']['other_processes_cores']} cores"
        for run in results.get("bare_loop_runs", [bare])
    ]
    lines += [
        f"reference: {bare['images_per_s']:.2f} images/s ({bare['images']} images, batch {bare['batch_size']}, "
        f"{bare['device']}, {bare['torch_threads']} torch threads)",
        f"  segmenter inputs: {bare.get('segmenter_tiles', bare['images'])} ({bare.get('tiles_per_s', float('nan')):.2f} tiles/s; "
        "native tiles, or one thumbnail per image in triage); a scan does the same tiles per image, so its tiles/s is "
        "its images/s times the same ratio",
        "  ms per image: " + ", ".join(f"{k} {v}" for k, v in bare["phase_ms_per_image"].items()),
        f"ray start-up: {results['ray_startup_s']} s (paid once, excluded from both rates)",
        "",
        f"{'setting':<28}{'images':>7}{'e2e img/s':>10}{'steady img/s':>13}{'steady/bare':>12}{'marginal':>9}{'CPU s/img':>10}{'CPU eff':>8}"
        f"{'driver MiB':>11}{'workers MiB':>12}{'this scan':>10}{'max worker':>11}{'others':>7}",
    ]
    for run in results.get("pipeline", []):
        memory = run["memory"]
        steady = f"{run['steady_images_per_s']:.2f}" if run["steady_images_per_s"] else "n/a"
        ratio = f"{run['steady_ratio_to_bare']:.2f}" if run["steady_ratio_to_bare"] else "n/a"
        lines.append(
            f"{run['setting'][:27]:<28}{run['size']:>7}{run['images_per_s']:>10.2f}{steady:>13}{ratio:>12}"
            f"{run.get('marginal_images_per_s') or float('nan'):>9.2f}"
            f"{run['steady_cpu_seconds_per_image'] or float('nan'):>10.2f}{run['cpu_efficiency_vs_bare'] or float('nan'):>8.2f}"
            f"{memory['driver_peak_mib']:>11.0f}{memory['ray_workers_peak_mib']:>12.0f}{workers_of_this_scan_mib(memory):>10.0f}"
            f"{memory['largest_worker_rss_mib']:>11.0f}{memory['other_processes_cores']:>7.2f}"
        )
    return "\n".join(lines)
