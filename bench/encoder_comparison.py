"""The three tested segmenter encoders on the same data and training budget: Jaccard per class, size, speed.

    python -m bench.encoder_comparison --train .data/manipulations/train --heldout .data/manipulations/heldout \
        --output .data/runs/encoders --epochs 3 --input-size 128 --batch-size 16 --threads 1 \
        --results bench/results/encoder_comparison.json

Each encoder (random initialisation, so none starts ahead) is trained by
`forgescan train segmenter` with the same arguments and seed, then scored by
`forgescan evaluate segmenter` on the held-out split (photographs training never
saw; per-class IoU at original resolution). Speed: training images/s from the
run's history, and inference tiles/s of the bare model on input-size tiles on
this machine (CPU, the torch threads given). Figures land in the results file
and as the markdown table docs/training.md carries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from forensics.model_card import MANIPULATION_CLASSES
from forensics.models import SEGMENTER_ENCODERS


def _run(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def tiles_per_second(checkpoint: Path, input_size: int, threads: int, batch_size: int = 8, batches: int = 5) -> float:
    """Steady-state forward passes of the bare model on random uint8 tiles (after one warm-up batch)."""
    import numpy as np
    import torch

    from forensics.checkpoint import load_checkpoint
    from forensics.inference import SegmenterPredictor

    torch.set_num_threads(threads)
    predictor = SegmenterPredictor(*load_checkpoint(checkpoint), device=torch.device("cpu"))
    tiles = np.random.default_rng(0).integers(0, 255, (batch_size, input_size, input_size, 3), dtype=np.uint8)
    predictor.logits(tiles)
    started = time.perf_counter()
    for _ in range(batches):
        predictor.logits(tiles)
    return batch_size * batches / (time.perf_counter() - started)


def compare(args: argparse.Namespace) -> dict:
    from forensics.checkpoint import load_checkpoint
    from jobs import evaluate, train

    output = Path(args.output)
    results = {"command": " ".join(["python -m bench.encoder_comparison"] + sys.argv[1:]), "train": args.train,
               "heldout": args.heldout, "epochs": args.epochs, "input_size": args.input_size, "batch_size": args.batch_size,
               "threads": args.threads, "classes": list(MANIPULATION_CLASSES), "encoders": {}}
    for encoder in args.encoders:
        run_folder, eval_folder = output / encoder / "run", output / encoder / "heldout"
        status = _run(train, ["segmenter", "--data", args.train, "--output", str(run_folder), "--encoder", encoder,
                              "--classes", ",".join(MANIPULATION_CLASSES), "--epochs", str(args.epochs),
                              "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
                              "--threads", str(args.threads), "--seed", str(args.seed), "--valid-fraction", "0.15",
                              "--version", f"unet-{encoder}-comparison"])
        if status:
            raise SystemExit(f"training {encoder} failed ({status})")
        checkpoint = run_folder / "segmenter.safetensors"
        status = _run(evaluate, ["segmenter", "--checkpoint", str(checkpoint), "--data", args.heldout,
                                 "--output", str(eval_folder), "--batch-size", "16"])
        if status:
            raise SystemExit(f"evaluating {encoder} failed ({status})")
        model, card = load_checkpoint(checkpoint)
        history = json.loads((run_folder / "metrics.json").read_text())["history"]
        evaluation = json.loads((eval_folder / "metrics.json").read_text())
        train_pairs = card.training_data["train_pairs"]
        results["encoders"][encoder] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_images_per_second": train_pairs * len(history) / sum(row["seconds"] for row in history),
            "inference_tiles_per_second": tiles_per_second(checkpoint, args.input_size, args.threads),
            "heldout_iou": {name: values["iou"] for name, values in evaluation["classes"]["per_class"].items()},
            "heldout_mean_iou": evaluation["classes"]["mean_iou"],
            "heldout_pixel_f1": evaluation["pixel"]["pixel_f1"],
            "best_epoch": card.metrics.get("best_epoch"),
        }
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(results, indent=2) + "\n")  # after each encoder: partial runs keep what they have
    return results


def markdown_table(results: dict) -> str:
    """The comparison as the markdown table docs/training.md shows."""
    classes = results["classes"]
    header = ["encoder", "parameters", *[f"IoU {name}" for name in classes], "mean IoU", "pixel F1 (union)",
              "train img/s", "inference tiles/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for encoder, figures in results["encoders"].items():
        ious = [figures["heldout_iou"].get(name) for name in classes]
        cells = [encoder, f"{figures['parameters'] / 1e6:.1f} M", *["–" if v is None else f"{v:.3f}" for v in ious],
                 f"{figures['heldout_mean_iou']:.3f}", f"{figures['heldout_pixel_f1']:.3f}",
                 f"{figures['train_images_per_second']:.1f}", f"{figures['inference_tiles_per_second']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encoder_comparison", description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--results", default="bench/results/encoder_comparison.json")
    parser.add_argument("--encoders", nargs="+", default=list(SEGMENTER_ENCODERS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-only", action="store_true", help="print the table of an existing --results file")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text()) if args.table_only else compare(args)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
