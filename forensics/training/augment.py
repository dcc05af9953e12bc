"""Augmentation that hides file format and size from the model, applied identically to every class.

Random JPEG re-compression, blur and resize run on real and fake images alike
(so a model cannot learn the container instead of the content); geometric
steps move a segmentation mask with its image. The last step resizes to the
model input exactly as the scanner does (bilinear, PIL reducing gap 2).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


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

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(flip_probability=0.0, resize_probability=0.0, blur_probability=0.0, jpeg_probability=0.0)


def resize_like_scanner(image: Image.Image, input_size: tuple[int, int]) -> Image.Image:
    """(height, width) model input, resized the way forensics.decode.decode_image does it."""
    height, width = input_size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.BILINEAR, reducing_gap=2.0)


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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment one RGB image (and its boolean mask) and return uint8 (H, W, 3) [+ bool (H, W)] at `input_size`."""
    mask_image = None if mask is None else Image.fromarray(mask.astype(np.uint8) * 255)
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
    pixels = np.asarray(resize_like_scanner(image, input_size), dtype=np.uint8)
    if mask_image is None:
        return pixels, None
    height, width = input_size
    mask_pixels = np.asarray(mask_image.resize((width, height), Image.NEAREST)) > 127
    return pixels, mask_pixels
