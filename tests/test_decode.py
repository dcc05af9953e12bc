"""decode_image: every odd or hostile input gives model inputs or a named error kind."""

import io

import numpy as np
import pytest
from PIL import Image

from forensics.decode import ImageDecodeError, decode_image
from tests.conftest import decompression_bomb_png, jpeg_bytes, png_bytes

SIZES = [(64, 64)]


def decode_error_kind(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, SIZES, **kwargs)
    return caught.value.kind


def test_jpeg_gives_facts_and_resized_input():
    decoded = decode_image(jpeg_bytes(300, 200), [(64, 64), (32, 48)])
    assert (decoded.format, decoded.width, decoded.height) == ("JPEG", 300, 200)
    assert decoded.inputs[(64, 64)].shape == (64, 64, 3)
    assert decoded.inputs[(32, 48)].shape == (32, 48, 3)
    assert decoded.inputs[(64, 64)].dtype == np.uint8


def test_large_jpeg_is_decoded_at_reduced_size_but_reports_full_size():
    decoded = decode_image(jpeg_bytes(2048, 1536), SIZES)
    assert (decoded.width, decoded.height) == (2048, 1536)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html>hello</html>", "not_an_image"),
        (b"just some text named .jpg", "not_an_image"),
        (decompression_bomb_png(), "too_large"),
    ],
)
def test_unusable_bytes_raise_named_errors(data, kind):
    assert decode_error_kind(data) == kind


def test_truncated_jpeg_is_an_error_not_a_crash():
    data = jpeg_bytes(200, 200)
    assert decode_error_kind(data[: len(data) // 3]) in ("truncated", "corrupt")


def test_pixel_limit_is_configurable():
    assert decode_error_kind(jpeg_bytes(100, 100), max_pixels=5_000) == "too_large"


def test_exif_orientation_swaps_reported_size():
    image = Image.fromarray(np.zeros((40, 100, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue(), SIZES)
    assert (decoded.width, decoded.height) == (40, 100)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("CMYK", (30, 20), (0, 255, 0, 0)),
        Image.new("L", (30, 20), 128),
        Image.new("RGBA", (30, 20), (0, 0, 0, 0)),
        Image.new("1", (30, 20), 1),
        Image.new("RGB", (1, 1), (255, 0, 0)),
    ],
    ids=["cmyk", "gray", "rgba", "bilevel", "1x1"],
)
def test_colour_modes_become_rgb(image):
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if image.mode == "CMYK" else "PNG")
    decoded = decode_image(buffer.getvalue(), SIZES)
    assert decoded.inputs[SIZES[0]].shape == (64, 64, 3)


def test_sixteen_bit_image_is_rescaled_not_clipped():
    values = np.full((20, 30), 40_000, dtype=np.uint16)
    decoded = decode_image(png_bytes(Image.fromarray(values)), SIZES)
    assert 140 < decoded.inputs[SIZES[0]].mean() < 170  # 40000/65535*255 = 155


def test_transparent_palette_image_is_flattened_on_white():
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    decoded = decode_image(png_bytes(image), SIZES)
    assert decoded.inputs[SIZES[0]].min() == 255


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), SIZES)
    pixel = decoded.inputs[SIZES[0]][10, 10]
    assert pixel[0] > 200 and pixel[2] < 50


def test_center_crop_keeps_native_pixels_for_trace_detectors():
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    decoded = decode_image(png_bytes(Image.fromarray(image)), [(64, 64, "center_crop"), (64, 64)])
    assert np.array_equal(decoded.inputs[(64, 64, "center_crop")], image[118:182, 168:232])
    assert decoded.inputs[(64, 64)].shape == (64, 64, 3)


def test_center_crop_enlarges_images_smaller_than_the_crop():
    decoded = decode_image(png_bytes(Image.new("RGB", (20, 10), (9, 9, 9))), [(64, 64, "center_crop")])
    assert decoded.inputs[(64, 64, "center_crop")].shape == (64, 64, 3)
