"""Calibration: make scores mean probabilities, and pick thresholds an operator can defend.

A temperature T is fitted by minimising the negative log-likelihood of held-out
logits (sigmoid(logit / T)); thresholds are chosen on held-out scores, e.g. the
lowest threshold whose false-positive rate stays at or below a target.
"""

from __future__ import annotations

import numpy as np
import torch


def binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits / temperature) against labels in {0, 1}."""
    logits_tensor = torch.as_tensor(np.asarray(logits, dtype=np.float64).ravel())
    labels_tensor = torch.as_tensor(np.asarray(labels, dtype=np.float64).ravel())
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits_tensor / temperature, labels_tensor))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises held-out NLL (LBFGS on log T, clipped to `bounds`)."""
    logits_tensor = torch.as_tensor(np.asarray(logits, dtype=np.float64).ravel())
    labels_tensor = torch.as_tensor(np.asarray(labels, dtype=np.float64).ravel())
    if logits_tensor.numel() == 0 or labels_tensor.unique().numel() < 2:
        raise ValueError("Temperature fitting needs held-out logits of both classes; add positives and negatives.")
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_temperature], lr=0.5, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits_tensor / log_temperature.exp(), labels_tensor
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_temperature.detach().exp())
    if not np.isfinite(temperature):
        return 1.0
    return float(np.clip(temperature, *bounds))


def threshold_at_fpr(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold (score >= threshold is positive) whose false-positive rate is <= target_fpr."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    negatives = np.sort(scores[~labels])
    if negatives.size == 0:
        raise ValueError("Choosing a threshold at a false-positive rate needs negative (real / authentic) samples.")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"--target-fpr must be in [0, 1), got {target_fpr}.")
    allowed = int(np.floor(target_fpr * negatives.size))  # negatives allowed at or above the threshold
    cut = negatives[negatives.size - allowed - 1]  # the highest negative that must stay below the threshold
    return float(np.nextafter(cut, np.inf))


DEFAULT_TARGET_FPR = 0.05  # false-positive rate the decision thresholds allow unless told otherwise
EVALUATION_BATCH_SIZE = 32  # images per model call as evaluate and calibrate score a split (tiles per call, segmenter)


def decision_threshold(scores: np.ndarray, labels: np.ndarray, target_fpr: float, floor: float = 0.5) -> float:
    """The threshold at `target_fpr` (see threshold_at_fpr), never below `floor`.

    With well-separated held-out scores the FPR rule alone can pick a tiny
    threshold (e.g. 0.003); the floor keeps a positive verdict the more probable
    class, and raising a threshold only lowers the false-positive rate further.
    """
    return max(threshold_at_fpr(scores, labels, target_fpr), floor)


DEFAULT_TARGET_PIXEL_FPR = 0.01  # share of an authentic image's pixels the pixel threshold may mark unless told otherwise
PIXEL_THRESHOLD_CANDIDATES = np.linspace(0.05, 0.95, 19)  # the pixel thresholds calibration chooses among


def threshold_for_best_f1(scores: np.ndarray, labels: np.ndarray, candidates: np.ndarray | None = None) -> float:
    """The candidate threshold with the highest F1, the lowest of equals (used for the per-pixel threshold)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    candidates = PIXEL_THRESHOLD_CANDIDATES if candidates is None else np.asarray(candidates)
    best, best_f1 = 0.5, -1.0
    for threshold in candidates:
        f1 = _f1(scores >= threshold, labels)
        if f1 > best_f1:
            best, best_f1 = round(float(threshold), 6), f1
    return best


def pixel_threshold_curve(scores: np.ndarray, labels: np.ndarray, authentic: np.ndarray) -> list[dict[str, float]]:
    """At each candidate pixel threshold: pixel F1, and the share of authentic images' pixels marked (None
    without authentic samples): the trade pixel_threshold chooses on, for a picture of it."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    authentic = np.asarray(authentic).astype(bool).ravel()
    return [{"threshold": round(float(cut), 6), "pixel_f1": _f1(scores >= cut, labels),
             "authentic_pixels_marked": float(np.mean(scores[authentic] >= cut)) if authentic.any() else None}
            for cut in PIXEL_THRESHOLD_CANDIDATES]


def pixel_threshold(scores: np.ndarray, labels: np.ndarray, authentic: np.ndarray,
                    target_pixel_fpr: float = DEFAULT_TARGET_PIXEL_FPR) -> tuple[float, dict[str, float]]:
    """The segmenter's pixel threshold and how it was chosen: the best-F1 candidate (pixel_threshold_curve)
    among those that mark at most `target_pixel_fpr` of the pixels of authentic images.

    `authentic` flags the samples that come from images with nothing manipulated. Pixel F1 is flat over a
    wide band of thresholds on manipulation data (most images manipulated, a tenth of the pixels), while an
    archive is mostly authentic photographs: among thresholds of about the same F1, the false alarms on
    authentic photographs decide. With no authentic samples, or target 1, it is the best-F1 threshold.
    """
    check_target_pixel_fpr(target_pixel_fpr)
    curve = pixel_threshold_curve(scores, labels, authentic)
    best = max(curve, key=lambda row: row["pixel_f1"])  # the first, lowest, of equal F1s, as threshold_for_best_f1
    has_authentic = curve[0]["authentic_pixels_marked"] is not None
    chosen = best
    if has_authentic and target_pixel_fpr < 1.0:
        allowed = [row for row in curve if row["authentic_pixels_marked"] <= target_pixel_fpr]
        chosen = max(allowed, key=lambda row: row["pixel_f1"]) if allowed else curve[-1]
    report = {"target_pixel_fpr": target_pixel_fpr, "pixel_f1": chosen["pixel_f1"],
              "best_f1_threshold": best["threshold"], "best_f1": best["pixel_f1"]}
    if has_authentic:
        report["authentic_pixels_marked"] = chosen["authentic_pixels_marked"]
    return chosen["threshold"], report


def check_target_pixel_fpr(target_pixel_fpr: float) -> None:
    """Refuse a --target-pixel-fpr outside [0, 1] before any work is done."""
    if not 0.0 <= target_pixel_fpr <= 1.0:
        raise ValueError(f"--target-pixel-fpr is a share of pixels in [0, 1] (0.01 = 1 %), got {target_pixel_fpr}.")


def _f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    denominator = predicted.sum() + labels.sum()
    return float(2 * np.count_nonzero(predicted & labels) / denominator) if denominator else 0.0


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def score_logit(scores: np.ndarray) -> np.ndarray:
    """logit of scores in [0, 1], clipped away from 0 and 1 so that saturated scores stay finite."""
    clipped = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(clipped) - np.log1p(-clipped)


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Platt scaling: slope and intercept of a logistic regression of labels on logit(score)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int).ravel()
    if np.unique(labels).size < 2:
        raise ValueError("Platt scaling needs held-out images of both classes (manipulated and authentic).")
    model = LogisticRegression(C=1e4, max_iter=1000).fit(score_logit(scores).reshape(-1, 1), labels)
    return {"slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}


def platt(scores, slope: float, intercept: float):
    """P(positive) = sigmoid(slope * logit(score) + intercept)."""
    from scipy.special import expit

    return expit(slope * score_logit(scores) + intercept)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins.

    `probabilities` are P(positive); each prediction's confidence is that of its
    most probable class, and it is correct when that class is the label.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if probabilities.size == 0:
        return float("nan")
    predicted = probabilities >= 0.5
    confidence = np.where(predicted, probabilities, 1.0 - probabilities)
    correct = predicted == labels
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            error += chosen.mean() * abs(confidence[chosen].mean() - correct[chosen].mean())
    return float(error)
