"""How `forgescan duplicates` grows: time and peak memory of the near-duplicate search at N synthetic PDQ hashes.

    python -m bench.duplicates_scale --sizes 10000 100000 1000000

Synthetic hashes: uniformly random 256-bit values (the worst case for the
16-bit band index: every band value equally likely), with 1% of them replaced
by copies of another hash 0-40 bits away, so there are pairs to find on both
sides of the 31-bit threshold. Each size runs the job's search
(`pipeline.duplicates.find_pairs_ray`, Ray Data tasks per band and query shard)
and the grouping (connected components) on a local Ray instance, and records
wall time, CPU seconds and the peak private memory of the process tree
(bench.process_tree). Results are appended to `bench/results/duplicates_scale.json`
as each size finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "duplicates_scale.json"


def synthetic_hashes(count: int, seed: int = 0, copy_fraction: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**64 - 1, (count, 4), dtype=np.uint64, endpoint=True)
    copies = int(count * copy_fraction)
    targets = rng.choice(count, copies, replace=False)
    sources = rng.choice(count, copies, replace=True)
    for target, source in zip(targets, sources):
        copy = words[source].copy()
        for bit in rng.choice(256, int(rng.integers(0, 41)), replace=False):
            copy[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
        words[target] = copy
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    import ray

    from bench.process_tree import ProcessTreeSampler
    from forensics.near_duplicates import connected_groups
    from pipeline.duplicates import find_pairs_ray

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    record = {"command": "python -m bench.duplicates_scale --sizes " + " ".join(map(str, args.sizes)),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, Ray num_cpus={args.num_cpus}",
              "load_average_at_start": os.getloadavg(), "runs": []}
    with ProcessTreeSampler() as resources:
        for size in args.sizes:
            words = synthetic_hashes(size)
            resources.reset()
            started = time.perf_counter()
            pairs = find_pairs_ray(words)
            searched = time.perf_counter()
            labels = connected_groups(size, pairs.query, pairs.indexed)
            finished = time.perf_counter()
            window = resources.window()
            grouped = int((np.bincount(labels)[labels] >= 2).sum())
            record["runs"].append({
                "hashes": size, "pairs": int(len(pairs.query)), "grouped_hashes": grouped,
                "search_seconds": round(searched - started, 2), "grouping_seconds": round(finished - searched, 2),
                "driver_peak_mib": window["driver_peak_mib"], "ray_workers_peak_mib": window["ray_workers_peak_mib"],
                "cpu_seconds": window["cpu_seconds"], "other_processes_cores": window["other_processes_cores"],
                "load_average_after": os.getloadavg(),
            })
            print(json.dumps(record["runs"][-1]), flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
