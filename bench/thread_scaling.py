"""How the two models scale with torch threads on CPU: decides threads per actor vs actors per node.

Runs the classifier and the segmenter alone (no decode, no masks) on random
uint8 batches, alternating thread counts round by round so that load from
other processes hits every setting alike; reports images/s and CPU seconds per
image. Usage: python -m bench.thread_scaling [--threads 1,2] [--batch-size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(threads_options: list[int], batch_size: int, rounds: int) -> dict:
    import torch

    from forensics.inference import ClassifierPredictor, SegmenterPredictor

    device = torch.device("cpu")
    models = {"classifier": ClassifierPredictor.from_checkpoint(None, device),
              "segmenter": SegmenterPredictor.from_checkpoint(None, device)}
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, 256, 256, 3), dtype=np.uint8)
    totals = {(name, threads): [0.0, 0.0] for name in models for threads in threads_options}
    for threads in threads_options:
        torch.set_num_threads(threads)
        for model in models.values():
            model.predict(pixels)  # warm-up per thread count
    for round_index in range(rounds):
        for threads in threads_options:
            torch.set_num_threads(threads)
            for name, model in models.items():
                wall, cpu = time.perf_counter(), time.process_time()
                model.predict(pixels)
                totals[(name, threads)][0] += time.perf_counter() - wall
                totals[(name, threads)][1] += time.process_time() - cpu
        print(f"round {round_index + 1}/{rounds} done", flush=True)
    images = batch_size * rounds
    return {f"{name}@{threads}": {"images_per_s": round(images / wall, 2), "cpu_s_per_image": round(cpu / images, 4)}
            for (name, threads), (wall, cpu) in totals.items()}


def main() -> None:
    from pipeline.config import ScanConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch-size", type=int, default=ScanConfig.batch_size)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = measure([int(t) for t in args.threads.split(",")], args.batch_size, args.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
