"""Manipulation masks: back to the original resolution, and in and out of COCO RLE.

The segmenter sees a small square; analysts need the mask on the image they
have. Probabilities are upsampled bilinearly to the original (height, width),
thresholded, and encoded with pycocotools so that `pycocotools.mask.decode`
returns exactly those pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask


@dataclass(frozen=True)
class MaskRLE:
    """COCO run-length encoding: column-major runs; size is [height, width]."""

    size: tuple[int, int]
    counts: str

    def to_row(self) -> dict:
        return {"size": [int(self.size[0]), int(self.size[1])], "counts": self.counts}

    def to_coco(self) -> dict:
        return {"size": [int(self.size[0]), int(self.size[1])], "counts": self.counts.encode("ascii")}


@dataclass(frozen=True)
class MaskSummary:
    """A thresholded mask at original resolution, encoded, with its area and box."""

    rle: MaskRLE
    area_fraction: float
    bbox: tuple[int, int, int, int]


def upsample_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w) float map to (height, width), as Pillow's bilinear filter does it. Enlarging
    (the usual case: a model-size map to a photo) goes through OpenCV, which gives Pillow's values to float
    rounding in a tenth of the time on a megapixel map; shrinking stays with Pillow, whose filter widens to
    average (OpenCV's does not)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape == (height, width):
        return probabilities
    if height >= probabilities.shape[0] and width >= probabilities.shape[1]:
        import cv2

        return cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
    resized = Image.fromarray(probabilities, mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def mask_at_original_size(probabilities: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """The binary manipulation mask at the image's own resolution."""
    return upsample_probabilities(probabilities, height, width) >= threshold


def encode_mask(binary_mask: np.ndarray) -> MaskRLE:
    encoded = coco_mask.encode(np.asfortranarray(binary_mask.astype(np.uint8)))
    return MaskRLE(size=(int(encoded["size"][0]), int(encoded["size"][1])), counts=encoded["counts"].decode("ascii"))


def decode_mask(rle: MaskRLE | dict) -> np.ndarray:
    """Binary (height, width) uint8 mask from a MaskRLE or an output row's `mask_rle` value."""
    if isinstance(rle, MaskRLE):
        return coco_mask.decode(rle.to_coco())
    counts = rle["counts"]
    return coco_mask.decode({"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts})


def empty_mask_summary(height: int, width: int) -> MaskSummary:
    """The summary of an all-background mask, without building it: one run of height x width zeros."""
    encoded = coco_mask.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)
    return MaskSummary(rle=MaskRLE(size=(height, width), counts=encoded["counts"].decode("ascii")),
                       area_fraction=0.0, bbox=(0, 0, 0, 0))


def summarise_mask(probabilities: np.ndarray, height: int, width: int, threshold: float) -> MaskSummary:
    if float(np.max(probabilities)) < threshold:
        # Bilinear interpolation never exceeds its inputs' maximum: the mask is empty (most images).
        return empty_mask_summary(height, width)
    else:
        binary = mask_at_original_size(probabilities, height, width, threshold)
    rle = encode_mask(binary)
    area = float(binary.sum()) / float(height * width)
    x, y, w, h = coco_mask.toBbox(rle.to_coco()).tolist()
    return MaskSummary(rle=rle, area_fraction=area, bbox=(int(x), int(y), int(w), int(h)))


TOP_FRACTION = 0.01  # the share of an image's most confident pixels its image-level manipulation score averages


def manipulation_score(probabilities: np.ndarray, top_fraction: float = TOP_FRACTION) -> float:
    """Image-level score: mean of the most confident `top_fraction` of pixel probabilities.

    Robust to a single hot pixel, yet high when any sizeable region is flagged.
    """
    flat = np.asarray(probabilities, dtype=np.float32).ravel()
    count = max(1, int(round(flat.size * top_fraction)))
    return float(np.partition(flat, flat.size - count)[flat.size - count :].mean())


# --- manipulation types (multi-class segmenters) -------------------------------------------------------


def manipulation_logits(class_logits: np.ndarray) -> np.ndarray:
    """(C, H, W) class logits -> (H, W) log-odds that a pixel is manipulated (any class but id 0).

    logsumexp of the manipulated classes minus the authentic logit: the binary
    logit whose sigmoid is 1 - softmax[0], so thresholds, temperature and the
    image score work for a multi-class segmenter exactly as for a binary one.
    """
    from scipy.special import logsumexp

    class_logits = np.asarray(class_logits, dtype=np.float32)
    return (logsumexp(class_logits[1:], axis=0) - class_logits[0]).astype(np.float32)


def manipulated_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """P(manipulated) per pixel from a segmenter's map: an (H, W) binary map as it is, (C, H, W) class
    probabilities as 1 - P(authentic), the union of the manipulated classes."""
    return 1.0 - probabilities[0] if probabilities.ndim == 3 else probabilities


def class_probabilities(class_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(C, H, W) class logits -> (C, H, W) probabilities: channel 0 is 1 - P(manipulated) with the card's
    temperature on the manipulation logit; the rest share P(manipulated) by the softmax of their logits."""
    from scipy.special import expit, softmax

    class_logits = np.asarray(class_logits, dtype=np.float32)
    manipulated = expit(manipulation_logits(class_logits) / temperature)
    probabilities = np.empty_like(class_logits)
    probabilities[0] = 1.0 - manipulated
    probabilities[1:] = softmax(class_logits[1:], axis=0) * manipulated
    return probabilities


@dataclass(frozen=True)
class ClassMask:
    """The pixels of one manipulation type at original resolution (an entry of the `mask_classes` column)."""

    class_id: int
    name: str
    rle: MaskRLE
    area_fraction: float

    def to_row(self) -> dict:
        return {"class_id": self.class_id, "name": self.name, "mask_rle": self.rle.to_row(), "area": self.area_fraction}


def class_index_map(probabilities: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """(C, h, w) class probabilities of any size -> (height, width) uint8 class ids at original resolution.

    A pixel is manipulated when 1 - P(authentic) reaches `threshold` (so the union of the
    manipulated classes is exactly `summarise_mask`'s mask); its class is then the most probable
    manipulated class. Channels are upsampled one at a time (bilinearly, as `upsample_probabilities`),
    keeping a running maximum, so memory stays a few maps whatever the number of classes.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    union = upsample_probabilities(manipulated_probabilities(probabilities), height, width) >= threshold
    classes = np.zeros((height, width), dtype=np.uint8)
    if not union.any():
        return classes
    best = np.full((height, width), -np.inf, dtype=np.float32)
    for class_id in range(1, len(probabilities)):
        channel = upsample_probabilities(probabilities[class_id], height, width)
        better = channel > best
        best[better] = channel[better]
        classes[better] = class_id
    classes[~union] = 0
    return classes


def summarise_classes(
    probabilities: np.ndarray, height: int, width: int, threshold: float, class_names: tuple[str, ...]
) -> tuple[list[ClassMask], str | None]:
    """One COCO RLE per manipulated class present (at original size) and the dominant type by area (None if none).

    Args:
        probabilities: (C, h, w) class probabilities (class_probabilities) at any size.
        class_names: names by class id, id 0 = authentic.
    """
    if len(probabilities) != len(class_names):
        raise ValueError(f"{len(probabilities)} class maps but {len(class_names)} class names {list(class_names)}; "
                         "the model card's `classes` must match the model's output channels.")
    classes = class_index_map(probabilities, height, width, threshold)
    counts = np.bincount(classes.ravel(), minlength=len(class_names))
    entries = [
        ClassMask(class_id, class_names[class_id], encode_mask(classes == class_id), float(counts[class_id]) / float(height * width))
        for class_id in range(1, len(class_names)) if counts[class_id]
    ]
    dominant = max(entries, key=lambda entry: entry.area_fraction).name if entries else None
    return entries, dominant


def gets_mask(manipulation_score, manipulated_threshold: float):
    """Whether an image gets a mask (also elementwise over an array of scores): only one whose calibrated
    manipulation score reaches the card's `manipulated` threshold, the one its verdict is judged by. Below it the
    map's strongest pixels are mostly the noise an authentic photograph leaves."""
    return manipulation_score >= manipulated_threshold


def summarise_written_masks(
    probabilities: np.ndarray, height: int, width: int, pixel_threshold: float, class_names: tuple[str, ...],
    manipulation_score: float, manipulated_threshold: float,
) -> tuple[MaskSummary, list[ClassMask] | None, str | None]:
    """The masks a scan writes for one image from its (h, w) or multi-class (C, h, w) probabilities: the union
    mask, the per-class masks (None for a binary map) and the dominant type; all empty when not gets_mask."""
    class_masks, dominant_type = ([] if probabilities.ndim == 3 else None), None
    if not gets_mask(manipulation_score, manipulated_threshold):
        return empty_mask_summary(height, width), class_masks, dominant_type
    if probabilities.ndim == 3:
        class_masks, dominant_type = summarise_classes(probabilities, height, width, pixel_threshold, class_names)
    return summarise_mask(manipulated_probabilities(probabilities), height, width, pixel_threshold), class_masks, dominant_type
