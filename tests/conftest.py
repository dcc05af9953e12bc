"""Shared fixtures: a real local Ray instance, a loopback S3 endpoint, tiny checkpoints, image archives."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

# Fake credentials before anything starts Ray, so the raylet and its workers inherit them.
from pipeline.local_s3 import FAKE_CREDENTIALS

os.environ.update(FAKE_CREDENTIALS)
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)
# Checkpoints proven to build are remembered per digest (forensics.checkpoint.validate_weights): not in the user's cache.
os.environ["FORGESCAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="forgescan-test-cache-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from forensics.checkpoint import save_checkpoint  # noqa: E402
from forensics.model_card import default_classifier_card, default_segmenter_card  # noqa: E402
from forensics.models import build_model  # noqa: E402
from pipeline.local_s3 import loopback_s3, s3_client  # noqa: E402

TINY_INPUT = (64, 64)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for the whole session (2 CPUs, like CI)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    with loopback_s3() as endpoint:
        yield endpoint


@pytest.fixture()
def s3(s3_endpoint):
    return s3_client(s3_endpoint)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Random-weight classifier and segmenter at 64x64 input: real architectures, fast on a CPU."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoints")
    classifier_card = default_classifier_card(TINY_INPUT).replace(version="tiny-classifier-untrained")
    segmenter_card = default_segmenter_card(TINY_INPUT).replace(version="tiny-segmenter-untrained",
                                                               thresholds={"pixel": 0.5, "manipulated": 0.5})
    classifier = save_checkpoint(build_model(classifier_card), classifier_card, folder / "classifier.safetensors")
    segmenter = save_checkpoint(build_model(segmenter_card), segmenter_card, folder / "segmenter.safetensors")
    return {"classifier": str(classifier), "segmenter": str(segmenter)}


@pytest.fixture(scope="session")
def tiny_native_checkpoints(tmp_path_factory):
    """The tiny models with native-resolution cards: 3 classifier crops, 64-px segmenter tiles overlapping by 16."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("native_checkpoints")
    classifier_card = default_classifier_card(TINY_INPUT).replace(
        version="tiny-classifier-native-untrained", resize_mode="native_crops", crops=3)
    segmenter_card = default_segmenter_card(TINY_INPUT).replace(
        version="tiny-segmenter-native-untrained", resize_mode="native_tiles", tile_overlap=16, max_tiles=12,
        thresholds={"pixel": 0.5, "manipulated": 0.5})
    classifier = save_checkpoint(build_model(classifier_card), classifier_card, folder / "classifier.safetensors")
    segmenter = save_checkpoint(build_model(segmenter_card), segmenter_card, folder / "segmenter.safetensors")
    return {"classifier": str(classifier), "segmenter": str(segmenter)}


def forget_cluster_address(port: int) -> None:
    """After a test stops its own `ray start` nodes: `ray stop` would delete Ray's pointer to the last started
    cluster, killing the nodes does not, and a later `ray.init()` would try to join the dead cluster."""
    pointer = Path("/tmp/ray/ray_current_cluster")
    try:
        if pointer.read_text().strip().endswith(f":{port}"):
            pointer.unlink()
    except FileNotFoundError:
        pass


def jpeg_bytes(width: int = 96, height: int = 64, seed: int = 0, quality: int = 90, **save_options) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    noise = rng.integers(0, 40, size=(height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality, **save_options)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decompression_bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims a huge canvas."""
    image = Image.new("1", (width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def mixed_archive_objects() -> dict[str, bytes]:
    """Good images and every kind of bad object an archive holds, keyed by relative name."""
    good = jpeg_bytes(120, 80, seed=1)
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    palette = Image.new("P", (32, 32), 3)
    palette.info["transparency"] = 3
    return {
        "good/photo 1.jpg": good,
        "good/cmyk.jpg": _encoded(Image.new("CMYK", (64, 48), (0, 200, 50, 10)), "JPEG"),
        "good/sixteen-bit.png": png_bytes(Image.fromarray(np.full((30, 40), 50_000, np.uint16))),
        "good/animated.gif": _animated("GIF"),
        "good/animated.webp": _animated("WEBP"),
        "good/exif-rotated.jpg": _exif_rotated_jpeg(),
        "good/ünïcode-ß.jpg": jpeg_bytes(70, 90, seed=2),
        "good/rgba.png": png_bytes(rgba),
        "good/palette.png": png_bytes(palette),
        "good/gray.png": png_bytes(Image.new("L", (50, 40), 100)),
        "good/tiny-1x1.png": png_bytes(Image.new("RGB", (1, 1), (1, 2, 3))),
        "bad/empty.jpg": b"",
        "bad/truncated.jpg": good[: len(good) // 2],
        "bad/page.jpg": b"<!DOCTYPE html><html><body>not an image</body></html>",
        "bad/random.bin": bytes(np.random.default_rng(3).integers(0, 256, 2048, dtype=np.uint8)),
        "bad/bomb.png": decompression_bomb_png(),
    }


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _animated(image_format: str) -> bytes:
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _encoded(frames[0], image_format, save_all=True, append_images=frames[1:], duration=50)


def _exif_rotated_jpeg() -> bytes:
    """Stored 100x40, displayed 40x100 (EXIF orientation 6)."""
    image = Image.new("RGB", (100, 40), (10, 120, 200))
    exif = image.getexif()
    exif[0x0112] = 6
    return _encoded(image, "JPEG", exif=exif.tobytes())


@pytest.fixture()
def mixed_archive(tmp_path):
    root = tmp_path / "archive"
    for name, data in mixed_archive_objects().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root
