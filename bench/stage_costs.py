"""CPU cost per image of each scan step, run outside Ray: where a pipeline's time goes before orchestration.

Calls the same functions the scan graph runs -- the listing, `fetch_and_decode`
(S3 GET through s3fs + sha256 + decode), `DetectForgeries` (both models, one
torch thread, as a 1-CPU actor), `assemble_rows` (mask upsample + RLE +
verdicts) and a Parquet write -- on benchmark images served by a loopback S3,
and prints wall and CPU milliseconds per image for each. Comparing their sum
with the pipeline's CPU seconds per image shows what Ray itself costs.
Usage: python -m bench.stage_costs [--images 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time


def measure(image_count: int, batch_size: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from bench.images import BUCKET, cached_images, upload_archives
    from forensics.model_card import CLASSIFIER, SEGMENTER
    from pipeline.scan import load_model_payload
    from pipeline.local_s3 import FAKE_CREDENTIALS, loopback_s3
    import pipeline.stages as stages
    from pipeline.config import ScanConfig
    from pipeline.stages import DetectForgeries, assemble_rows, fetch_and_decode, row_settings
    from pipeline.storage import iter_listing, read_object

    os.environ.update(FAKE_CREDENTIALS)
    torch.set_num_threads(1)
    paths = cached_images(image_count, progress=False)
    classifier_weights, classifier_card = load_model_payload(None, CLASSIFIER)  # the weights and cards a scan uses
    segmenter_weights, segmenter_card = load_model_payload(None, SEGMENTER)
    sizes = list(dict.fromkeys([classifier_card.input_spec, segmenter_card.input_spec]))
    limits = {"max_pixels": ScanConfig.max_pixels, "max_bytes": ScanConfig.max_bytes, "min_side": ScanConfig.min_side}
    costs = {name: [0.0, 0.0] for name in ("list", "s3_get_only", "fetch_and_decode", "models", "assemble_rows", "parquet_write")}

    def timed(name, function, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        costs[name][0] += time.perf_counter() - wall
        costs[name][1] += time.process_time() - cpu
        return result

    with loopback_s3() as endpoint:
        source = upload_archives(endpoint, paths, [image_count], progress=False)[image_count]
        listing = timed("list", lambda: [row for page in iter_listing(source, endpoint) for row in page])
        stages._assigned_cpus = lambda: 1.0  # as a 1-CPU actor; and never look for (or attach to) a Ray cluster
        detect = DetectForgeries(classifier_card.to_dict(), classifier_weights, segmenter_card.to_dict(), segmenter_weights, "native")
        warm = listing[:batch_size]  # warm the s3fs connection pool and the models (oneDNN builds kernels on first use)
        for row in warm:
            read_object(row["uri"], endpoint, "{}")
        detect(fetch_and_decode({key: np.array([row[key] for row in warm], dtype=object) for key in warm[0]},
                                classifier_card.to_dict(), segmenter_card.to_dict(), endpoint_url=endpoint,
                                storage_options_json="{}", **limits))
        for start in range(0, len(listing), batch_size):
            rows = listing[start : start + batch_size]
            for row in rows:
                timed("s3_get_only", read_object, row["uri"], endpoint, "{}")
            batch = {key: np.array([row[key] for row in rows], dtype=object) for key in rows[0]}
            decoded = timed("fetch_and_decode", fetch_and_decode, batch, classifier_card.to_dict(), segmenter_card.to_dict(),
                            endpoint_url=endpoint, storage_options_json="{}", **limits)
            scored = timed("models", detect, decoded)
            table = timed("assemble_rows", assemble_rows, scored, "bench", **row_settings(classifier_card, segmenter_card))
            timed("parquet_write", pq.write_table, table, io.BytesIO(), compression="zstd")
    count = len(listing)
    return {"images": count, "batch_size": batch_size, "bucket": BUCKET, "input_specs": [list(spec) for spec in sizes],
            "models": [classifier_card.version, segmenter_card.version],
            "ms_per_image": {name: {"wall": round(1000 * wall / count, 2), "cpu": round(1000 * cpu / count, 2)}
                             for name, (wall, cpu) in costs.items()},
            "note": "s3_get_only is included in fetch_and_decode; the S3 server's own CPU is not in these figures"}


def main() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.config import ScanConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=ScanConfig.batch_size)
    args = parser.parse_args()
    print(json.dumps(measure(args.images, args.batch_size), indent=2))


if __name__ == "__main__":
    main()
