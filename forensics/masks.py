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
    """Bilinear resize of an (h, w) float map to (height, width)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape == (height, width):
        return probabilities
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


def summarise_mask(probabilities: np.ndarray, height: int, width: int, threshold: float) -> MaskSummary:
    if float(np.max(probabilities)) < threshold:
        # Bilinear interpolation never exceeds its inputs' maximum: the mask is empty, skip the upsample.
        binary = np.zeros((height, width), dtype=bool)
    else:
        binary = mask_at_original_size(probabilities, height, width, threshold)
    rle = encode_mask(binary)
    area = float(binary.sum()) / float(height * width)
    x, y, w, h = coco_mask.toBbox(rle.to_coco()).tolist()
    return MaskSummary(rle=rle, area_fraction=area, bbox=(int(x), int(y), int(w), int(h)))


def manipulation_score(probabilities: np.ndarray, top_fraction: float = 0.01) -> float:
    """Image-level score: mean of the most confident `top_fraction` of pixel probabilities.

    Robust to a single hot pixel, yet high when any sizeable region is flagged.
    """
    flat = np.asarray(probabilities, dtype=np.float32).ravel()
    count = max(1, int(round(flat.size * top_fraction)))
    return float(np.partition(flat, flat.size - count)[flat.size - count :].mean())
