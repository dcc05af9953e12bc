"""Pictures of findings: a manipulation mask laid over its image, and a contact sheet of them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

MASK_COLOUR = np.array([255, 40, 40], dtype=np.float32)


def overlay_mask(image: np.ndarray, mask: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Tint flagged pixels red and outline the mask's bounding box; returns RGB uint8."""
    tinted = image.astype(np.float32).copy()
    flagged = mask.astype(bool)
    tinted[flagged] = tinted[flagged] * (1 - opacity) + MASK_COLOUR * opacity
    result = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
    if flagged.any():
        rows, cols = np.where(flagged)
        ImageDraw.Draw(result).rectangle([cols.min(), rows.min(), cols.max(), rows.max()], outline=(255, 0, 0), width=2)
    return np.asarray(result)


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
