"""The contender: the pipeline a user writes from Ray Data's batch-inference docs, with forgescan's models.

`read_images` resized on read, one actor holding both models, masks at model
size, `write_parquet` -- about twenty lines of Ray. Same cards and weights as
a scan (the bundled checkpoints in their triage view), so `forgescan benchmark
--end-to-end` compares orchestration, not models. It has no sha256, no error
rows, no resume, no provenance and no masks at the original size.

Usage: python -m bench.docs_pipeline SOURCE_FOLDER OUTPUT_FOLDER [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


class BothModels:
    """One actor, both models, as the docs' `map_batches(CallableClass, compute=ActorPoolStrategy(...))`."""

    def __init__(self):
        from forensics.checkpoint import bundled_checkpoint
        from forensics.inference import ClassifierPredictor, SegmenterPredictor
        from forensics.model_card import CLASSIFIER, SEGMENTER

        self.classifier = ClassifierPredictor.from_checkpoint(bundled_checkpoint(CLASSIFIER))
        self.segmenter = SegmenterPredictor.from_checkpoint(bundled_checkpoint(SEGMENTER))
        self.classifier.card = self.classifier.card.for_triage()
        self.segmenter.card = self.segmenter.card.for_triage()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from forensics.masks import encode_mask

        images = np.stack(batch["image"])
        ai_scores = self.classifier.predict(images)
        maps = self.segmenter.predict(images)
        pixel = self.segmenter.card.threshold("pixel")
        return {
            "path": batch["path"],
            "ai_score": ai_scores,
            "manipulation_score": np.array([self.segmenter.image_score(m) for m in maps], dtype=np.float32),
            "mask_counts": np.array([encode_mask(m >= pixel).counts for m in maps], dtype=object),
        }


def run(source: str, output: str, batch_size: int = 32) -> dict:
    import ray

    started = time.monotonic()
    dataset = ray.data.read_images(source, size=(128, 128), mode="RGB", include_paths=True)
    dataset = dataset.map_batches(BothModels, compute=ray.data.ActorPoolStrategy(size=1), batch_size=batch_size)
    dataset.write_parquet(output)
    return {"seconds_in_ray_data": round(time.monotonic() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("output")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(run(args.source, args.output, args.batch_size))


if __name__ == "__main__":
    main()
