"""Augmentation that hides file format and size from the model, applied identically to every class.

Random JPEG re-compression, blur and resize run on real and fake images alike
(so a model cannot learn the container instead of the content); geometric
steps move a segmentation mask with its image. The last step resizes to the
model input exactly as the scanner does: bilinear resize (PIL reducing gap 2),
or, for a native card (`center_crop`, `native_crops`, `native_tiles`), a window
at native resolution cut by forensics.tiling.cut (mirrored where the image is
smaller), so the model trains on the pixels the scan's crops and tiles show it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from forensics.decode import CENTER_CROP, center_crop
from forensics.model_card import NATIVE_CROPS, NATIVE_TILES
from forensics.tiling import cut


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation step; `none()` switches them all off."""

    flip_probability: float = 0.5
    resize_probability: float = 0.2
    resize_range: tuple[float, float] = (0.6, 1.4)
    blur_probability: float = 0.1
    blur_radius: tuple[float, float] = (0.2, 1.2)
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (65, 96)
    # Native-tile segmenters: the share of training windows placed over a manipulated pixel. A random window of a
    # large image mostly misses a small edit, and the rarer classes are then hardly ever seen (nnU-Net's
    # foreground oversampling, e.g. 0.5; validation windows stay centred). 0 keeps the recipe of the shipped cards.
    manipulated_window_probability: float = 0.0

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(flip_probability=0.0, resize_probability=0.0, blur_probability=0.0, jpeg_probability=0.0,
                   manipulated_window_probability=0.0)


def resize_like_scanner(image: Image.Image, input_size: tuple[int, int]) -> Image.Image:
    """(height, width) model input, resized the way forensics.decode.decode_image does it."""
    height, width = input_size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.BILINEAR, reducing_gap=2.0)


def random_crop_native(rng: np.random.Generator, image: Image.Image, input_size: tuple[int, int]) -> np.ndarray:
    """A random input_size crop at native resolution (the training twin of decode's center crop)."""
    height, width = input_size
    scale = max(height / image.height, width / image.width)
    if scale > 1:
        image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BILINEAR)
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)


def native_window(
    rng: np.random.Generator, image: Image.Image, mask_image: Image.Image | None, input_size: tuple[int, int], random: bool,
    manipulated_window_probability: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One tile-sized window of the image (and its mask) at native resolution: where the scan's tiles look.

    Random position in training, the centre in validation; mirrored at the edges like a scan tile. With
    `manipulated_window_probability`, a training window is placed so that it holds a manipulated pixel picked at
    random (anywhere inside the window), when the mask has one.
    """
    height, width = input_size
    pixels = np.asarray(image, dtype=np.uint8)
    if mask_image is not None and mask_image.size != image.size:  # geometric augmentation resized the image
        mask_image = mask_image.resize(image.size, Image.NEAREST)
    mask_pixels = None if mask_image is None else np.asarray(mask_image)
    top = int(rng.integers(0, max(0, image.height - height) + 1)) if random else max(0, (image.height - height) // 2)
    left = int(rng.integers(0, max(0, image.width - width) + 1)) if random else max(0, (image.width - width) // 2)
    if random and mask_pixels is not None and rng.random() < manipulated_window_probability:
        rows, columns = np.nonzero(mask_pixels)
        if rows.size:
            pick = int(rng.integers(rows.size))
            top = _window_start_holding(rng, int(rows[pick]), height, image.height)
            left = _window_start_holding(rng, int(columns[pick]), width, image.width)
    window = cut(pixels, top, left, height, width)
    if mask_pixels is None:
        return window, None
    return window, cut(mask_pixels, top, left, height, width)


def _window_start_holding(rng: np.random.Generator, position: int, length: int, extent: int) -> int:
    """A random window start along one axis such that [start, start + length) holds `position` and stays inside
    the image (or starts at 0 when the image is shorter than the window)."""
    low, high = max(0, position - length + 1), min(position, max(0, extent - length))
    return int(rng.integers(low, high + 1)) if high >= low else 0


def jpeg_recompress(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def augment(
    rng: np.random.Generator,
    image: Image.Image,
    input_size: tuple[int, int],
    config: AugmentConfig,
    mask: np.ndarray | None = None,
    resize_mode: str = "resize",
    random_crop: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment one RGB image (and its mask: bool, or uint8 class ids) and return uint8 (H, W, 3) [+ the mask,
    same dtype, (H, W)] at `input_size`.

    `resize_mode` is the card's: ``resize`` squashes the whole image as the
    scanner does; ``center_crop`` keeps native pixels, cropping at random
    (`random_crop`, training) or in the centre (validation, as the scanner does).
    """
    if resize_mode in (CENTER_CROP, NATIVE_CROPS) and mask is not None:
        raise ValueError(f"resize_mode `{resize_mode}` is for classifiers; a segmenter uses `resize` or `native_tiles`.")
    # Masks travel as class ids (bool masks as 0/1) and are only ever resized nearest, so ids survive.
    mask_image = None if mask is None else Image.fromarray(np.asarray(mask, dtype=np.uint8))
    if rng.random() < config.flip_probability:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        mask_image = None if mask_image is None else mask_image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < config.resize_probability:
        scale = rng.uniform(*config.resize_range)
        new_size = (max(8, int(image.width * scale)), max(8, int(image.height * scale)))
        image = image.resize(new_size, Image.BILINEAR)
    if rng.random() < config.blur_probability:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*config.blur_radius))))
    if rng.random() < config.jpeg_probability:
        image = jpeg_recompress(image, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
    if resize_mode == NATIVE_TILES:
        window, mask_pixels = native_window(rng, image, mask_image, input_size, random_crop,
                                            config.manipulated_window_probability)
        return window, None if mask_pixels is None else _like(mask_pixels, mask)
    if resize_mode in (CENTER_CROP, NATIVE_CROPS):
        pixels = random_crop_native(rng, image, input_size) if random_crop else center_crop(image, *input_size)
    else:
        pixels = np.asarray(resize_like_scanner(image, input_size), dtype=np.uint8)
    if mask_image is None:
        return pixels, None
    height, width = input_size
    mask_pixels = np.asarray(mask_image.resize((width, height), Image.NEAREST))
    return pixels, _like(mask_pixels, mask)


def _like(mask_pixels: np.ndarray, original: np.ndarray) -> np.ndarray:
    """The augmented mask in the caller's type: bool for a bool mask, class ids otherwise."""
    return mask_pixels > 0 if original.dtype == bool else mask_pixels.astype(original.dtype)
