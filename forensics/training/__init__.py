"""Training for both forensic models: dataset loaders, augmentation, splits and the shared loop (no Ray here)."""

from forensics.training.augment import AugmentConfig, augment, resize_like_scanner
from forensics.training.datasets import (
    FAKE,
    REAL,
    DatasetError,
    ImageMaskPair,
    LabelledImage,
    find_image_mask_pairs,
    find_labelled_images,
    fingerprint_samples,
    load_mask,
    manipulation_families_of,
    without_families,
    without_manipulation_families,
)
from forensics.training.loops import TrainResult, TrainSettings, WorkerContext, calibrate_card, train_model
from forensics.training.splits import holdout_split, stratified_folds

__all__ = [
    "FAKE", "REAL", "AugmentConfig", "DatasetError", "ImageMaskPair", "LabelledImage", "TrainResult", "TrainSettings",
    "WorkerContext", "augment", "calibrate_card", "find_image_mask_pairs", "find_labelled_images", "fingerprint_samples",
    "holdout_split", "load_mask", "manipulation_families_of", "resize_like_scanner",
    "stratified_folds", "train_model", "without_families", "without_manipulation_families",
]
