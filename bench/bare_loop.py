"""The bare limit: decode, preprocess, both models and mask post-processing in one plain Python loop.

It does the same work per image as a scan (hash, `decode_image`, classifier,
segmenter, mask upsample + RLE, verdict) with the same batch size and device,
but no Ray, no object store, no storage client and no Parquet: what the
pipeline would reach if orchestration were free.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from pipeline.config import ANALYSIS_MODES, NATIVE, TRIAGE, ScanConfig


def run_bare_loop(paths: list[str], batch_size: int, torch_threads: int | None, device: str | None = None,
                  analysis: str = NATIVE) -> dict:
    """Process `paths` in batches; returns timings (seconds) split by phase and the steady-state rate.

    The models are built and warmed up with one batch before the clock starts,
    as a scan's actor does before its first batch. `analysis` is the scan's
    mode: `native` (the cards' crops and tiles) or `triage` (their quick view).
    """
    import torch

    from forensics.decode import decode_image
    from forensics.inference import ClassifierPredictor, SegmenterPredictor, pick_device
    from forensics.masks import summarise_written_masks
    from forensics.verdict import decide_verdict
    from forensics.checkpoint import bundled_checkpoint
    from forensics.model_card import CLASSIFIER, SEGMENTER
    from forensics.tiling import segmenter_inputs

    if torch_threads:
        torch.set_num_threads(torch_threads)
    started = time.perf_counter()
    target = pick_device(device)
    classifier = ClassifierPredictor.from_checkpoint(bundled_checkpoint(CLASSIFIER), target)
    segmenter = SegmenterPredictor.from_checkpoint(bundled_checkpoint(SEGMENTER), target)
    if analysis == TRIAGE:
        classifier.card, segmenter.card = classifier.card.for_triage(), segmenter.card.for_triage()
    classifier_spec, segmenter_spec = _input_spec(classifier.card), _input_spec(segmenter.card)
    sizes = list(dict.fromkeys([classifier_spec, segmenter_spec]))  # what the scan asks decode_image for
    warmup = np.zeros((min(batch_size, len(paths)), *segmenter.card.input_size, 3), dtype=np.uint8)
    classifier.predict(warmup)
    segmenter.predict(warmup)
    model_ready_s = time.perf_counter() - started

    ai_threshold = classifier.card.threshold("ai_generated")
    pixel_threshold = segmenter.card.threshold("pixel")
    manipulated_threshold = segmenter.card.threshold("manipulated")
    phases = {"read_and_hash": 0.0, "decode": 0.0, "classifier": 0.0, "segmenter": 0.0, "masks_and_verdicts": 0.0}
    verdicts: dict[str, int] = {}
    tiles = 0
    clock = time.perf_counter()
    loop_started, loop_cpu_started = clock, time.process_time()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[phase] += now - clock
        clock = now

    for start in range(0, len(paths), batch_size):
        decoded = []
        for path in paths[start : start + batch_size]:
            data = Path(path).read_bytes()
            hashlib.sha256(data).hexdigest()
            lap("read_and_hash")
            decoded.append(decode_image(data, sizes))
            lap("decode")
        classifier_views = np.stack([classifier.view(d.inputs[classifier_spec]) for d in decoded])
        segmenter_views = [segmenter.view(d.inputs[segmenter_spec])[0] for d in decoded]
        tiles += sum(segmenter_inputs(segmenter.card, *view.shape[:2]) for view in segmenter_views)
        lap("decode")
        ai_scores = classifier.predict(classifier_views)
        lap("classifier")
        maps = list(segmenter.probability_maps(segmenter_views))
        scores = [segmenter.image_score(m) for m in maps]
        probabilities = [m.astype(np.float16) for m in maps]  # what the actor hands on
        lap("segmenter")
        for image, ai_score, probability, score in zip(decoded, ai_scores, probabilities, scores):
            summarise_written_masks(probability.astype(np.float32), image.height, image.width, pixel_threshold,  # as the scan
                                    tuple(segmenter.card.class_names), score, manipulated_threshold)
            verdict = decide_verdict(float(ai_score), score, ai_threshold, manipulated_threshold)
            verdicts[verdict.label] = verdicts.get(verdict.label, 0) + 1
        lap("masks_and_verdicts")
    seconds = time.perf_counter() - loop_started
    cpu_seconds = time.process_time() - loop_cpu_started
    return {
        "images": len(paths),
        "batch_size": batch_size,
        "device": str(target),
        "analysis": analysis,
        "models": {"classifier": classifier.card.version, "segmenter": segmenter.card.version,
                   "input_specs": [list(spec) for spec in sizes]},
        "torch_threads": torch.get_num_threads(),
        "model_ready_s": round(model_ready_s, 2),
        "loop_s": round(seconds, 2),
        "images_per_s": round(len(paths) / seconds, 3),
        "segmenter_tiles": tiles,
        "tiles_per_s": round(tiles / seconds, 3),
        "cpu_seconds_per_image": round(cpu_seconds / len(paths), 3),
        "phase_s": {k: round(v, 2) for k, v in phases.items()},
        "phase_ms_per_image": {k: round(1000 * v / len(paths), 1) for k, v in phases.items()},
        "verdicts": verdicts,
        "pid": os.getpid(),
    }


def _input_spec(card) -> tuple:
    """(h, w) or (h, w, "center_crop"), as the scan derives it from the card."""
    return tuple(getattr(card, "input_spec", tuple(card.input_size)))


def _child(connection, paths, batch_size, torch_threads, device, analysis) -> None:
    try:
        connection.send(run_bare_loop(paths, batch_size, torch_threads, device, analysis))
    except BaseException as error:  # report, then let the parent raise
        connection.send({"error": f"{type(error).__name__}: {error}"})
    finally:
        connection.close()


def run_bare_loop_in_child(paths: list[str], batch_size: int, torch_threads: int | None, device: str | None = None,
                           analysis: str = NATIVE) -> dict:
    """Run the bare loop in a fresh spawned process, so its memory is measured apart from the driver's."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, [str(p) for p in paths], batch_size, torch_threads, device, analysis),
                              name="forgescan-bare-loop")
    process.start()
    sender.close()
    result = receiver.recv()
    process.join()
    if "error" in result:
        raise RuntimeError(f"bare loop failed: {result['error']}")
    return result


def main() -> None:
    """`python -m bench.bare_loop FOLDER`: the bare loop over a folder's images, one JSON line of results
    (what `forgescan benchmark --end-to-end` times from process start to exit)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--batch-size", type=int, default=ScanConfig.batch_size)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--analysis", choices=ANALYSIS_MODES, default=NATIVE)
    args = parser.parse_args()
    paths = sorted(str(p) for p in Path(args.folder).iterdir() if p.is_file())
    print(json.dumps(run_bare_loop(paths, args.batch_size, args.threads, analysis=args.analysis)))


if __name__ == "__main__":
    main()
