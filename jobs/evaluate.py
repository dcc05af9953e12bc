"""Evaluate checkpoints on a labelled set: image-level AUC / accuracy / F1 and pixel F1 / IoU, JSON + pictures.

    forgescan evaluate classifier --checkpoint runs/classifier/classifier.safetensors --data DATASET --output eval/
    forgescan evaluate classifier --checkpoint runs/c/fold_0/model.safetensors --checkpoint runs/c/fold_1/model.safetensors ...
    forgescan evaluate segmenter  --checkpoint runs/segmenter/segmenter.safetensors --data DATASET --output eval/

Images are decoded and resized exactly as the scanner does, and scores use
each card's temperature and thresholds, so the figures describe what a scan
would report. Several classifier checkpoints are evaluated one by one and as
an ensemble (mean calibrated probability, mean threshold).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jobs.cli import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=("classifier", "segmenter"))
    parser.add_argument("--checkpoint", action="append",
                        help="safetensors checkpoint; repeat for a fold ensemble (classifier). Default: the shipped demo checkpoint")
    parser.add_argument("--data", required=True, help="labelled set: real/ + fake/ or Parquet (classifier); images/ + masks/ (segmenter)")
    parser.add_argument("--masks", help="segmenter: mask folder, when --data is the images folder")
    parser.add_argument("--output", required=True, help="folder for metrics.json and the pictures")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--record-in-card", action="store_true",
                        help="write the headline figures and this command into the (single) checkpoint's card under metrics.evaluation")


def run(args: argparse.Namespace) -> int:
    from forensics.checkpoint import CheckpointError
    from forensics.training import DatasetError

    output = Path(args.output)
    try:
        checkpoints = args.checkpoint or [str(shipped_checkpoint(args.model))]
        if not Path(checkpoints[0]).exists():
            raise ValueError(f"No checkpoint given and no demo {args.model} checkpoint ships in this installation: pass --checkpoint.")
        summary = (evaluate_classifier if args.model == "classifier" else evaluate_segmenter)(args, checkpoints, output)
    except (DatasetError, CheckpointError, ValueError) as error:
        print(f"forgescan evaluate: {error}", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(_headline(summary), indent=2))
    if args.record_in_card:
        if len(checkpoints) != 1:
            print("forgescan evaluate: --record-in-card needs exactly one --checkpoint.", file=sys.stderr)
            return 2
        record_in_card(checkpoints[0], summary)
    return 0


def record_in_card(checkpoint: str, summary: dict[str, Any]) -> None:
    """Add the headline figures, the data fingerprint and the command to the card's metrics."""
    import shlex

    from forensics.checkpoint import read_card, update_card

    card = read_card(checkpoint)
    figures = _headline(summary)
    figures.pop("checkpoint", None)
    figures = figures.get("models", {}).get(checkpoint, figures) if "models" in figures else figures
    evaluation = {"data": summary["data"], "data_fingerprint": summary["data_fingerprint"], "count": summary["count"],
                  **figures, "command": " ".join(["forgescan evaluate"] + [shlex.quote(a) for a in sys.argv[2 if Path(sys.argv[0]).name in ("forgescan", "cli.py") else 1:]])}
    update_card(checkpoint, card.replace(metrics={**card.metrics, "evaluation": evaluation}))


def shipped_checkpoint(model: str) -> Path:
    """The demo checkpoint that ships inside the forensics package."""
    from forensics.checkpoint import BUNDLED_CHECKPOINTS

    return BUNDLED_CHECKPOINTS / f"{model}.safetensors"


def _predictor(path: str, kind: str, device):
    from forensics.checkpoint import load_checkpoint
    from forensics.inference import ModelPredictor, pick_device

    model, card = load_checkpoint(path, expected_kind=kind)
    return ModelPredictor(model, card, pick_device(device))


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "f1", "roc_auc", "pixel_f1", "pixel_iou", "all_one_mask_f1", "threshold")
    def pick(figures):
        return {k: figures[k] for k in keys if k in figures}
    headline = {name: pick(value) if isinstance(value, dict) else value for name, value in summary.items()
                if name in ("ensemble", "pixel", "image_level", "count", "checkpoint")}
    if "models" in summary:
        headline["models"] = {name: pick(figures) for name, figures in summary["models"].items()}
    return headline


def evaluate_classifier(args, checkpoints: list[str], output: Path) -> dict[str, Any]:
    from forensics.calibration import sigmoid
    from forensics.metrics import classification_metrics, plot_confusion_matrix, plot_roc_curves
    from forensics.training import find_labelled_images, fingerprint_samples
    from forensics.training.evaluation import classifier_logits

    samples = find_labelled_images(args.data)
    models, curves, probabilities, thresholds = {}, {}, [], []
    labels = None
    for path in checkpoints:
        predictor = _predictor(path, "classifier", args.device)
        logits, labels = classifier_logits(predictor, samples, args.batch_size)
        scores = sigmoid(logits, predictor.card.temperature)
        threshold = predictor.card.threshold("ai_generated")
        models[path] = {"version": predictor.version, "temperature": predictor.card.temperature,
                        **classification_metrics(labels, scores, threshold)}
        curves[Path(path).parent.name + "/" + Path(path).stem] = (labels, scores)
        probabilities.append(scores)
        thresholds.append(threshold)
    summary: dict[str, Any] = {"data": str(args.data), "data_fingerprint": fingerprint_samples(samples),
                               "count": len(samples), "models": models}
    final = models[checkpoints[0]]
    if len(checkpoints) > 1:
        ensemble_scores = np.mean(probabilities, axis=0)
        final = summary["ensemble"] = classification_metrics(labels, ensemble_scores, float(np.mean(thresholds)))
        curves["ensemble"] = (labels, ensemble_scores)
    output.mkdir(parents=True, exist_ok=True)
    plot_roc_curves(curves, output / "roc_curve.png", "Classifier ROC")
    plot_confusion_matrix(final["confusion_matrix"], output / "confusion_matrix.png",
                          title="Confusion matrix" + (" (ensemble)" if len(checkpoints) > 1 else ""))
    return summary


def evaluate_segmenter(args, checkpoints: list[str], output: Path) -> dict[str, Any]:
    from forensics.metrics import classification_metrics, plot_confusion_matrix, plot_mask_examples, plot_roc_curves
    from forensics.training import find_image_mask_pairs, fingerprint_samples
    from forensics.training.evaluation import segmenter_outputs

    if len(checkpoints) != 1:
        raise ValueError("Evaluate one segmenter checkpoint at a time (pass --checkpoint once).")
    pairs = find_image_mask_pairs(args.data, args.masks)
    predictor = _predictor(checkpoints[0], "segmenter", args.device)
    outputs = segmenter_outputs(predictor, pairs, args.batch_size)
    card = predictor.card
    summary: dict[str, Any] = {
        "data": str(args.data), "data_fingerprint": fingerprint_samples(pairs), "count": len(pairs),
        "checkpoint": checkpoints[0], "version": card.version, "temperature": card.temperature,
        "pixel": {"threshold": card.threshold("pixel"), "resolution": "original image size", **outputs.pixel_counts.to_dict()},
    }
    output.mkdir(parents=True, exist_ok=True)
    has_mask = np.array(outputs.has_mask)
    if has_mask.any() and not has_mask.all():
        from forensics.calibration import expected_calibration_error

        scores = outputs.manipulation_scores(card.temperature, card.score_calibration)
        summary["image_level"] = classification_metrics(has_mask, scores, card.threshold("manipulated"),
                                                        class_names=("authentic", "manipulated"))
        summary["image_level"]["expected_calibration_error"] = expected_calibration_error(scores, has_mask)
        plot_roc_curves({"manipulation score": (has_mask, scores)}, output / "roc_curve.png", "Segmenter: image-level ROC")
        plot_confusion_matrix(summary["image_level"]["confusion_matrix"], output / "confusion_matrix.png",
                              class_names=("authentic", "manipulated"), title="Image-level confusion matrix")
    plot_mask_examples(outputs.examples, output / "mask_examples.png", card.threshold("pixel"), f"Segmenter {card.version}")
    return summary


if __name__ == "__main__":
    sys.exit(run_module("jobs.evaluate"))
