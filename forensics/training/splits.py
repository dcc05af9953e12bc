"""Train/validation splits: stratified K-fold for the classifier, a seeded hold-out for the segmenter."""

from __future__ import annotations

import numpy as np


def stratified_folds(labels, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, validation indices) per fold, each fold keeping the class balance."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels).astype(int)
    smallest = int(np.bincount(labels, minlength=2).min())
    if folds < 2:
        raise ValueError(f"--folds must be at least 2 for cross-validation, got {folds}.")
    if smallest < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} images of each class; the smaller class has "
            f"{smallest}. Add images or lower --folds."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train, valid) for train, valid in splitter.split(np.zeros(len(labels)), labels)]


def holdout_split(count: int, valid_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random (train indices, validation indices) split."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"--valid-fraction must be between 0 and 1, got {valid_fraction}.")
    order = np.random.default_rng(seed).permutation(count)
    valid_count = max(1, int(round(count * valid_fraction)))
    if valid_count >= count:
        raise ValueError(f"{count} samples are too few to hold out {valid_fraction:.0%} for validation.")
    return np.sort(order[valid_count:]), np.sort(order[:valid_count])
