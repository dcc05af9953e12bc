"""Evaluation figures for both models, as JSON-ready dicts and as pictures (matplotlib, Agg).

Image level: accuracy, F1, ROC-AUC, confusion matrix and a classification
report. Pixel level: F1 and IoU (Jaccard) accumulated over a whole set, next to
the scores of the trivial all-zero and all-one masks so a reader can tell a
model from a constant.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLASS_NAMES = ("real", "fake")


def classification_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, class_names=CLASS_NAMES
) -> dict[str, Any]:
    """Image-level figures for scores in [0, 1] (P(positive)) against labels in {0, 1}."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, roc_auc_score

    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    predictions = (scores >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "count": int(labels.size),
        "positives": int(labels.sum()),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=[0, 1]).tolist(),
        "classification_report": classification_report(
            labels, predictions, labels=[0, 1], target_names=list(class_names), output_dict=True, zero_division=0
        ),
    }


@dataclass
class PixelCounts:
    """True/false positives and false negatives summed over many masks (micro-averaged pixel scores)."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    true_negative: int = 0
    positive_pixels: int = 0
    total_pixels: int = 0

    def add(self, predicted: np.ndarray, target: np.ndarray) -> None:
        predicted = np.asarray(predicted, dtype=bool)
        target = np.asarray(target, dtype=bool)
        if predicted.shape != target.shape:
            raise ValueError(f"Predicted mask shape {predicted.shape} differs from target {target.shape}; resize one.")
        self.true_positive += int(np.count_nonzero(predicted & target))
        self.false_positive += int(np.count_nonzero(predicted & ~target))
        self.false_negative += int(np.count_nonzero(~predicted & target))
        self.true_negative += int(np.count_nonzero(~predicted & ~target))
        self.positive_pixels += int(np.count_nonzero(target))
        self.total_pixels += int(target.size)

    def __add__(self, other: "PixelCounts") -> "PixelCounts":
        """The counts of two sets of masks together (`sum(many, PixelCounts())` pools a subset of images)."""
        return PixelCounts(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other))))

    def unmarked(self) -> "PixelCounts":
        """The counts of the same truth with nothing predicted (an image that gets no mask)."""
        return PixelCounts(0, 0, self.positive_pixels, self.total_pixels - self.positive_pixels, self.positive_pixels, self.total_pixels)

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positive + self.false_positive + self.false_negative
        return float(2 * self.true_positive / denominator) if denominator else 1.0

    @property
    def iou(self) -> float:
        denominator = self.true_positive + self.false_positive + self.false_negative
        return float(self.true_positive / denominator) if denominator else 1.0

    def to_dict(self) -> dict[str, Any]:
        fraction = self.positive_pixels / self.total_pixels if self.total_pixels else 0.0
        return {
            "pixel_f1": self.f1,
            "pixel_iou": self.iou,
            "pixel_precision": float(self.true_positive / max(1, self.true_positive + self.false_positive)),
            "pixel_recall": float(self.true_positive / max(1, self.positive_pixels)),
            "positive_pixel_fraction": float(fraction),
            "all_zero_mask_f1": 0.0 if self.positive_pixels else 1.0,
            "all_one_mask_f1": float(2 * fraction / (1 + fraction)) if fraction else 0.0,
            "all_one_mask_iou": float(fraction),
        }


def pixel_metrics(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Micro pixel F1 / IoU over a stack of (N, H, W) probability maps and boolean targets."""
    counts = PixelCounts()
    counts.add(np.asarray(probabilities) >= threshold, targets)
    return {"threshold": float(threshold), **counts.to_dict()}


def class_metrics(class_stats: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Per-class and mean IoU (Jaccard) and F1 from pixel stats summed over a set, by segmentation_models_pytorch.metrics.

    Args:
        class_stats: (4, C) true positives, false positives, false negatives, true negatives per class id.
        class_names: names by class id.

    Means are over the classes that occur in the truth or the predictions (an absent,
    never-predicted class has no defined IoU and is listed with None).
    """
    import segmentation_models_pytorch as smp
    import torch

    true_positive, false_positive, false_negative, true_negative = (torch.as_tensor(np.asarray(v, dtype=np.int64))[None] for v in class_stats)
    iou = smp.metrics.iou_score(true_positive, false_positive, false_negative, true_negative, reduction="none")[0]
    f1 = smp.metrics.f1_score(true_positive, false_positive, false_negative, true_negative, reduction="none")[0]
    occurs = (true_positive + false_positive + false_negative)[0] > 0
    per_class = {
        name: {"iou": float(iou[index]) if occurs[index] else None, "f1": float(f1[index]) if occurs[index] else None,
               "support_pixels": int(true_positive[0, index] + false_negative[0, index])}
        for index, name in enumerate(class_names)
    }
    return {
        "per_class": per_class,
        "mean_iou": float(iou[occurs].mean()) if occurs.any() else None,
        "mean_f1": float(f1[occurs].mean()) if occurs.any() else None,
    }


def class_stats_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """(C, C) pixel confusion matrix (rows true, columns predicted) -> (4, C) tp, fp, fn, tn per class."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positive = np.diag(confusion)
    false_positive = confusion.sum(0) - true_positive
    false_negative = confusion.sum(1) - true_positive
    true_negative = confusion.sum() - true_positive - false_positive - false_negative
    return np.stack([true_positive, false_positive, false_negative, true_negative])


# --- pictures ----------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix, path: str | Path, class_names=CLASS_NAMES, title: str = "Confusion matrix") -> Path:
    """The matrix as a labelled heat map (rows true, columns predicted), sized to the number of classes."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    side = max(4.0, 0.9 * len(class_names) + 1.5)
    figure, axes = plt.subplots(figsize=(side, side * 0.9))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(class_names)), class_names, rotation=45 if len(class_names) > 2 else 0, ha="right" if len(class_names) > 2 else "center")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return _save(figure, path)


def plot_roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC") -> Path:
    """One ROC line per named (labels, scores) pair, with its AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.2, 4))
    for name, (labels, scores) in curves.items():
        if len(np.unique(labels)) < 2:
            continue
        false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
        axes.plot(false_positive_rate, true_positive_rate, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=7)
    return _save(figure, path)


def plot_pixel_threshold_curve(curve: list[dict], path: str | Path, chosen: float, title: str = "Pixel threshold") -> Path:
    """Pixel F1 and the share of authentic images' pixels marked against the pixel threshold
    (forensics.calibration.pixel_threshold_curve), the card's threshold marked."""
    plt = _pyplot()
    figure, f1_axes = plt.subplots(figsize=(5.6, 3.8))
    thresholds = [row["threshold"] for row in curve]
    f1_axes.plot(thresholds, [row["pixel_f1"] for row in curve], marker=".", color="tab:blue", label="pixel F1")
    f1_axes.set_xlabel("pixel threshold")
    f1_axes.set_ylabel("pixel F1", color="tab:blue")
    marked = [row["authentic_pixels_marked"] for row in curve]
    if all(value is not None for value in marked):
        marked_axes = f1_axes.twinx()
        marked_axes.plot(thresholds, [100 * value for value in marked], marker=".", color="tab:red")
        marked_axes.set_ylabel("authentic pixels marked (%)", color="tab:red")
        marked_axes.set_yscale("symlog", linthresh=1)
    f1_axes.axvline(chosen, color="grey", linestyle="--", linewidth=0.8, label=f"the card's threshold {chosen:g}")
    f1_axes.set_title(title, fontsize=8)
    f1_axes.legend(loc="lower left", fontsize=7)
    return _save(figure, path)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of P(positive): per bin, the mean predicted probability, the observed positive rate
    and the count (empty bins are left out). A calibrated model has rate == mean in every bin."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(float).ravel()
    which = np.clip((probabilities * bins).astype(int), 0, bins - 1)
    rows = []
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            rows.append({"low": index / bins, "high": (index + 1) / bins, "mean_probability": float(probabilities[chosen].mean()),
                         "positive_rate": float(labels[chosen].mean()), "count": int(chosen.sum())})
    return rows


def plot_reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "Reliability",
                             bins: int = 10) -> Path:
    """Observed positive rate against mean predicted probability per bin (one line per named (labels,
    probabilities) pair, its expected calibration error in the legend), over a histogram of the predictions."""
    from forensics.calibration import expected_calibration_error

    plt = _pyplot()
    figure, (axes, counts) = plt.subplots(2, 1, figsize=(4.4, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    edges = np.linspace(0, 1, bins + 1)
    for name, (labels, probabilities) in curves.items():
        rows = reliability_bins(probabilities, labels, bins)
        ece = expected_calibration_error(probabilities, labels)
        axes.plot([r["mean_probability"] for r in rows], [r["positive_rate"] for r in rows], marker="o",
                  label=f"{name} (ECE {ece:.3f})")
        counts.hist(np.asarray(probabilities, dtype=float), bins=edges, histtype="step", label=name)
    axes.set_ylabel("observed fraction positive")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=7)
    counts.set_xlabel("predicted probability")
    counts.set_ylabel("images")
    counts.set_yscale("log")
    return _save(figure, path)


def plot_training_curves(history: list[dict[str, float]], path: str | Path, keys: tuple[str, ...], title: str) -> Path:
    """Lines of the chosen per-epoch history keys (e.g. train_loss, valid_loss) against the epoch."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.4))
    epochs = [row["epoch"] for row in history]
    for key in keys:
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axes.plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=key)
    axes.set_xlabel("epoch")
    axes.set_title(title)
    axes.legend(fontsize=7)
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_mask_examples(examples, path: str | Path, threshold: float = 0.5, title: str = "Segmenter examples") -> Path:
    """Rows of (image, true mask, predicted probability, predicted mask) at model resolution. An example is
    (image, truth, probability), whose mask is the map at `threshold`, or (image, truth, probability, mask) with
    the mask a scan wrote (none for an image below the `manipulated` threshold)."""
    plt = _pyplot()
    rows = max(1, len(examples))
    figure, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    for row, (image, truth, probability, *written) in enumerate(examples):
        mask = (written[0], "mask written") if written else (probability >= threshold, "map at the pixel threshold")
        for column, (picture, name) in enumerate(((image, "image"), (truth, "true mask"), (probability, "P(manipulated)"), mask)):
            axes[row, column].imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1 if picture.ndim == 2 else None)
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(name, fontsize=8)
    figure.suptitle(title, fontsize=9)
    return _save(figure, path)
