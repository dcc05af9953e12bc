"""Image decoding that turns any byte string into model inputs or a named error.

Archives hold everything: truncated JPEGs, HTML named `.jpg`, 16-bit TIFFs,
decompression bombs. `decode_image` either returns the image facts and resized
RGB arrays for the models, or raises `ImageDecodeError` with a kind an analyst
can filter on. JPEGs are decoded at reduced size (`draft`) when the models need
far fewer pixels than the file holds.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels; larger images become `too_large` error rows

_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_MODES_NEEDING_ALPHA_FLATTEN = {"RGBA", "LA", "PA", "RGBa", "La"}


class ImageDecodeError(ValueError):
    """The bytes are not a usable image. `kind` is a short machine-readable reason."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    """An image as the models see it, plus the facts written to the output row.

    Attributes:
        format: container format reported by the decoder (JPEG, PNG, ...).
        width, height: size after EXIF orientation, at full resolution.
        inputs: RGB uint8 arrays of shape (h, w, 3), one per requested input spec.
    """

    format: str
    width: int
    height: int
    inputs: dict[tuple[int, int], np.ndarray]


from forensics.model_card import CENTER_CROP, NATIVE_CROPS, NATIVE_TILES, RESIZE, RESIZE_MODES  # noqa: F401 (re-exported)

NATIVE_MODES = (CENTER_CROP, NATIVE_CROPS, NATIVE_TILES)
DRAFT_MIN_SIDE = 512
# A spec `(height, width, LUMA)` asks for the whole image resized to grey (ITU-R 601 luma, PDQ's own weights):
# a third of the resampling work of an RGB resize, for a view that only needs luminance (the PDQ hash).
LUMA = "luma"


def decode_image(
    data: bytes,
    input_sizes: list[tuple] | tuple[tuple, ...],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode bytes into the model inputs; raises ImageDecodeError for anything unusable.

    Args:
        input_sizes: input specs, each `(height, width)` (the whole image resized: what the
            segmenter needs to map its mask back) or `(height, width, "center_crop")` (a crop
            at native resolution: keeps the pixel-level traces of generators that resizing
            would erase), or `(height, width, "native_crops" | "native_tiles")`: the whole
            image at full resolution, which forensics.tiling cuts into crops or tiles.
            JPEGs are drafted to reduced size only when no spec needs native pixels.
    """
    if not data:
        raise ImageDecodeError("empty", "the object has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's own bomb limit follows --max-pixels, both above and below its 89.5 MP default.
            Image.MAX_IMAGE_PIXELS = max_pixels
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        if isinstance(error, UnidentifiedImageError):
            raise ImageDecodeError("not_an_image", f"no image decoder recognises these bytes ({_sniff(data)})") from None
        raise ImageDecodeError("too_large", f"{error} (the limit is --max-pixels {max_pixels:,}; raise it to scan this image)") from None
    except Exception as error:  # corrupt headers raise a zoo of exception types
        raise ImageDecodeError("corrupt", f"cannot read the image header: {error}") from None

    stored_width, stored_height = image.size
    if stored_width < 1 or stored_height < 1:
        raise ImageDecodeError("corrupt", f"image reports size {stored_width}x{stored_height}")
    if stored_width * stored_height > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"{stored_width}x{stored_height} = {stored_width * stored_height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (raise --max-pixels to scan it)",
        )
    image_format = image.format or "unknown"
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        orientation = 1
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = stored_height, stored_width
    else:
        width, height = stored_width, stored_height

    specs = list(dict.fromkeys(tuple(s) for s in input_sizes))
    # JPEGs are drafted (decoded at a reduced DCT scale) to no less than DRAFT_MIN_SIDE, whatever the specs:
    # a model's input then does not depend on which other views were asked for in the same call (the scan
    # adds the 512 px PDQ view; evaluation asks for the model's input alone), so both see the same pixels.
    largest_side = max([DRAFT_MIN_SIDE] + [max(spec[0], spec[1]) for spec in specs])
    needs_native_pixels = any(len(spec) > 2 and spec[2] in NATIVE_MODES for spec in specs)
    try:
        if not needs_native_pixels and image_format == "JPEG" and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
            image.draft("RGB" if image.mode != "L" else "L", (largest_side, largest_side))
        image.seek(0)
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except ImageDecodeError:
        raise
    except OSError as error:
        message = str(error)
        kind = "truncated" if "truncated" in message or "broken data stream" in message else "corrupt"
        raise ImageDecodeError(kind, f"decoding failed: {message}") from None
    except Exception as error:
        raise ImageDecodeError("corrupt", f"decoding failed: {type(error).__name__}: {error}") from None

    native = np.asarray(rgb, dtype=np.uint8) if needs_native_pixels else None
    inputs = {}
    for spec in specs:
        out_h, out_w = spec[0], spec[1]
        if len(spec) > 2 and spec[2] == CENTER_CROP:
            inputs[spec] = center_crop(rgb, out_h, out_w)
        elif len(spec) > 2 and spec[2] in (NATIVE_CROPS, NATIVE_TILES):
            inputs[spec] = native  # the same full-resolution array for every native spec
            continue
        elif len(spec) > 2 and spec[2] == LUMA:
            inputs[spec] = np.asarray(rgb.convert("L").resize((out_w, out_h), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
        else:
            inputs[spec] = np.asarray(rgb.resize((out_w, out_h), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
    return DecodedImage(format=image_format, width=width, height=height, inputs=inputs)


def center_crop(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The central height x width pixels at native resolution (smaller images are enlarged to fit first)."""
    scale = max(height / image.height, width / image.width)
    if scale > 1:
        image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BILINEAR)
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha flattened onto white, 16/32-bit rescaled, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in _MODES_NEEDING_ALPHA_FLATTEN:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.ndim == 3:
            values = values[..., :3]
        top = 65535.0 if mode.startswith("I;16") else max(float(values.max()), 1.0)
        gray = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageDecodeError("unsupported", f"colour mode {mode} cannot be converted to RGB: {error}") from None


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "looks like HTML"
    if head.startswith(b"%pdf"):
        return "looks like a PDF"
    if head[:1] in (b"{", b"["):
        return "looks like JSON"
    try:
        data[:256].decode("utf-8")
        return "looks like text"
    except UnicodeDecodeError:
        return f"starts with bytes {data[:8].hex()}"
