"""Training reports: per-fold and overall figures as JSON, plus the pictures a reviewer looks at first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from forensics.calibration import sigmoid
from forensics.checkpoint import read_card
from forensics.metrics import classification_metrics, plot_confusion_matrix, plot_roc_curves, plot_training_curves


def write_classifier_report(fold_folders: list[Path], output: Path) -> dict[str, Any]:
    """Per-fold figures (each with its own calibration) and the overall out-of-fold figures."""
    per_fold, curves, all_labels, all_scores, all_predictions = [], {}, [], [], []
    for index, folder in enumerate(fold_folders):
        card = read_card(folder / "model.safetensors")
        validation = np.load(folder / "validation.npz")
        scores = sigmoid(validation["logits"], card.temperature)
        labels = validation["labels"].astype(int)
        threshold = card.threshold("ai_generated")
        figures = classification_metrics(labels, scores, threshold)
        figures.update(fold=index, temperature=card.temperature, best_epoch=card.metrics.get("best_epoch"))
        per_fold.append(figures)
        curves[f"fold {index}"] = (labels, scores)
        all_labels.append(labels)
        all_scores.append(scores)
        all_predictions.append((scores >= threshold).astype(int))
        history = json.loads((folder / "history.json").read_text())
        plot_training_curves(history, output / f"training_curves_fold_{index}.png", ("train_loss", "valid_loss"),
                             f"Classifier fold {index}: loss")
        plot_training_curves(history, output / f"validation_fold_{index}.png", ("accuracy", "f1", "roc_auc"),
                             f"Classifier fold {index}: validation")
    labels, scores = np.concatenate(all_labels), np.concatenate(all_scores)
    # Out-of-fold predictions: each fold's own threshold; the AUC pools the calibrated scores.
    overall = classification_metrics(labels, np.concatenate(all_predictions).astype(float), 0.5)
    overall["roc_auc"] = classification_metrics(labels, scores)["roc_auc"]
    overall["note"] = "out-of-fold predictions of all trained folds, each at its own calibrated threshold"
    curves["all folds (out-of-fold)"] = (labels, scores)
    plot_roc_curves(curves, output / "roc_curve.png", "Classifier ROC (validation folds)")
    plot_confusion_matrix(overall["confusion_matrix"], output / "confusion_matrix.png", title="Out-of-fold confusion matrix")
    best_fold = int(np.argmax([f["roc_auc"] or 0.0 for f in per_fold]))
    summary = {"best_fold": best_fold, "per_fold": per_fold, "overall": overall}
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def row_fractions(confusion) -> np.ndarray:
    """A pixel confusion matrix as the share of each true class (rows sum to 1; rounded for the picture)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    return np.round(confusion / np.maximum(1, confusion.sum(1, keepdims=True)), 2)


def write_segmenter_report(folder: Path, output: Path) -> dict[str, Any]:
    """Loss curves and pixel F1/IoU per epoch, and the calibrated validation figures from the card."""
    card = read_card(folder / "model.safetensors")
    history = json.loads((folder / "history.json").read_text())
    plot_training_curves(history, output / "training_curves.png", ("train_loss", "valid_loss"), "Segmenter: loss")
    plot_training_curves(history, output / "validation_curves.png", ("pixel_f1", "pixel_iou", "all_one_mask_f1"),
                         "Segmenter: validation pixel F1 / IoU")
    summary = {"history": history, "card_metrics": card.metrics, "temperature": card.temperature, "thresholds": card.thresholds}
    classes = card.metrics.get("validation_calibrated", {}).get("classes")
    if classes:  # multi-class: which manipulation type is taken for which, pixel by pixel
        plot_training_curves(history, output / "class_curves.png", ("mean_iou", "mean_f1"), "Segmenter: validation mean IoU / F1")
        plot_confusion_matrix(row_fractions(classes["confusion_matrix"]), output / "class_confusion_matrix.png",
                              class_names=classes["class_names"], title="Pixel classes (validation, share of each true class)")
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
