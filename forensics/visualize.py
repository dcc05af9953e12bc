"""Pictures of findings: masks drawn over their images, as a tinted picture, a transparent layer or a contact sheet."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

MASK_COLOUR = (255, 40, 40)
MASK_OPACITY = 0.45  # how strongly a mask tints the picture under it
BELOW_THRESHOLD_COLOUR = (150, 150, 150)
# One colour per manipulation type (a colour-blind-safe qualitative palette); types past the palette wrap around.
TYPE_COLOURS = ((230, 25, 75), (0, 130, 200), (245, 130, 48), (60, 180, 75), (145, 30, 180), (70, 240, 240),
                (240, 50, 230), (128, 128, 0))


def overlay_mask(image: np.ndarray, mask: np.ndarray, opacity: float = MASK_OPACITY,
                 colour: tuple[int, int, int] = MASK_COLOUR) -> np.ndarray:
    """Tint flagged pixels and outline the mask's bounding box; returns RGB uint8 at the image's size."""
    tinted = image.astype(np.float32).copy()
    flagged = mask.astype(bool)
    tinted[flagged] = tinted[flagged] * (1 - opacity) + np.asarray(colour, dtype=np.float32) * opacity
    result = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
    if flagged.any():
        rows, cols = np.where(flagged)
        ImageDraw.Draw(result).rectangle([cols.min(), rows.min(), cols.max(), rows.max()], outline=colour, width=2)
    return np.asarray(result)


def shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (height, width) mask reduced to `size` = (width, height), keeping every flagged region visible."""
    if mask.shape[::-1] == tuple(size):
        return mask.astype(bool)
    reduced = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)
    return np.asarray(reduced) > 0


def mask_layer(masks: list[tuple[np.ndarray, tuple[int, int, int]]], size: tuple[int, int],
               opacity: float = 0.5) -> np.ndarray:
    """A transparent RGBA layer of `size` = (width, height) with each (mask, colour) tinted in, later masks on top."""
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    for mask, colour in masks:
        flagged = shrink_mask(mask, size)
        layer[flagged] = (*colour, int(round(255 * opacity)))
    return layer


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def contact_sheet(tiles: list[tuple[np.ndarray, str]], columns: int = 4, tile_size: int = 256) -> bytes:
    """PNG bytes of captioned thumbnails in a grid."""
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    caption_height = 34
    sheet = Image.new("RGB", (columns * tile_size, rows * (tile_size + caption_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, (image, caption) in enumerate(tiles):
        thumbnail = Image.fromarray(image)
        thumbnail.thumbnail((tile_size, tile_size))
        x = (index % columns) * tile_size
        y = (index // columns) * (tile_size + caption_height)
        sheet.paste(thumbnail, (x + (tile_size - thumbnail.width) // 2, y))
        for line_number, line in enumerate(caption.splitlines()[:2]):
            draw.text((x + 4, y + tile_size + 2 + 15 * line_number), line[:44], fill=(0, 0, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
