"""Image-level and pixel-level figures, and the pictures written next to them."""

from __future__ import annotations

import numpy as np
import pytest

from forensics.metrics import (
    PixelCounts,
    classification_metrics,
    pixel_metrics,
    plot_confusion_matrix,
    plot_mask_examples,
    plot_roc_curves,
    plot_training_curves,
)


def test_classification_metrics_match_hand_counts():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.7, 0.6, 0.8, 0.3])
    figures = classification_metrics(labels, scores, threshold=0.5)
    assert figures["confusion_matrix"] == [[2, 1], [1, 2]]
    assert figures["accuracy"] == pytest.approx(4 / 6)
    assert figures["f1"] == pytest.approx(2 / 3)
    assert figures["roc_auc"] == pytest.approx(6 / 9)
    assert figures["classification_report"]["fake"]["support"] == 3


def test_roc_auc_is_none_when_only_one_class_is_present():
    assert classification_metrics([1, 1], [0.2, 0.9])["roc_auc"] is None


def test_pixel_f1_and_iou_are_micro_averaged_over_all_masks():
    counts = PixelCounts()
    counts.add(np.array([[1, 1], [0, 0]], bool), np.array([[1, 0], [0, 0]], bool))  # tp 1, fp 1
    counts.add(np.array([[0, 0], [0, 0]], bool), np.array([[1, 1], [0, 0]], bool))  # fn 2
    assert counts.f1 == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
    assert counts.iou == pytest.approx(1 / 4)


def test_pixel_metrics_report_the_trivial_mask_baselines():
    target = np.zeros((2, 10, 10), bool)
    target[:, :2] = True  # 20% of pixels
    figures = pixel_metrics(np.ones_like(target, dtype=float), target)
    assert figures["pixel_f1"] == pytest.approx(figures["all_one_mask_f1"]) == pytest.approx(2 * 0.2 / 1.2)
    assert figures["all_zero_mask_f1"] == 0.0
    assert pixel_metrics(target.astype(float), target)["pixel_f1"] == 1.0


def test_mask_shape_mismatch_says_to_resize():
    with pytest.raises(ValueError, match="resize"):
        PixelCounts().add(np.zeros((2, 2), bool), np.zeros((3, 3), bool))


def test_pictures_are_written_as_png(tmp_path):
    rng = np.random.default_rng(0)
    labels, scores = np.array([0, 1] * 10), rng.random(20)
    paths = [
        plot_confusion_matrix([[5, 1], [2, 4]], tmp_path / "cm.png"),
        plot_roc_curves({"model": (labels, scores)}, tmp_path / "roc.png"),
        plot_training_curves([{"epoch": 1, "train_loss": 1.0, "valid_loss": 0.9}, {"epoch": 2, "train_loss": 0.5, "valid_loss": 0.6}],
                             tmp_path / "curves.png", ("train_loss", "valid_loss"), "loss"),
        plot_mask_examples([(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.eye(8, dtype=bool), rng.random((8, 8)))],
                           tmp_path / "examples.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
