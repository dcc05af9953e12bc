"""Serving benchmark: requests/s and p50/p99 latency of the HTTP endpoint at a few concurrency levels.

A benchmark, not a test: it reports, it never asserts. Starts a local Ray instance and the endpoint
(pipeline.serving, bundled checkpoints unless given), posts photo-like JPEGs over real HTTP on 127.0.0.1,
and writes JSON (default bench/results/serving.json).

    python -m bench.serving --concurrency 1,4,8 --requests 24 --size 512
"""

import argparse
import json
import platform
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _jpeg(size: int, seed: int) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size * size * 3).reshape(size, size, 3)
    image = np.clip(base + rng.integers(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    from pipeline.config import ANALYSIS_MODES
    from pipeline.serving import ServeConfig, build_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--size", type=int, default=512, help="side of the square test JPEGs, px")
    parser.add_argument("--analysis", choices=ANALYSIS_MODES, default=ServeConfig.analysis)
    parser.add_argument("--max-batch-size", type=int, default=ServeConfig.max_batch_size)
    parser.add_argument("--results", type=Path, default=Path("bench/results/serving.json"))
    args = parser.parse_args()

    import httpx
    import ray
    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServeConfig(analysis=args.analysis, max_batch_size=args.max_batch_size)
    serve.run(build_app(config), name="forgescan-bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    while httpx.get(f"{url}/health", timeout=30).status_code != 200:
        time.sleep(0.5)
    images = [_jpeg(args.size, seed) for seed in range(8)]
    httpx.post(f"{url}/predict", files={"file": ("warm.jpg", images[0])}, timeout=300)  # warm-up

    def one(index: int) -> float:
        started = time.perf_counter()
        response = httpx.post(f"{url}/predict", files={"file": (f"{index}.jpg", images[index % len(images)])},
                              params={"mask": "false"}, timeout=300)
        response.raise_for_status()
        return time.perf_counter() - started

    levels = []
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            latencies = np.array(list(pool.map(one, range(args.requests))))
        seconds = time.perf_counter() - started
        level = {"concurrency": concurrency, "requests": args.requests, "seconds": round(seconds, 2),
                 "requests_per_s": round(args.requests / seconds, 2),
                 "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
                 "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1)}
        print(level, flush=True)
        levels.append(level)
    describe = httpx.get(f"{url}/", timeout=30).json()
    serve.shutdown()
    results = {
        "command": "python -m bench.serving " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "image": f"{args.size}x{args.size} JPEG", "analysis": args.analysis, "max_batch_size": args.max_batch_size,
        "models": describe["models"], "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared)",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "levels": levels,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
