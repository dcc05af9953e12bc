"""Realistic benchmark JPEGs (640-2048 px photo crops), cached on disk and served from a loopback S3."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from forensics.synthetic import real_photographs

IMAGE_CACHE = Path(".data/bench/images-v1")
BUCKET = "forgescan-bench"
SHORTEST_LONG_SIDE, LONGEST_LONG_SIDE = 640, 2048
ASPECT_RATIOS = (1.0, 4 / 3, 3 / 2, 16 / 9)
ROTATED_FRACTION = 0.1  # phone photos stored sideways with an EXIF orientation tag


def benchmark_jpeg(index: int) -> bytes:
    """One deterministic photo-like JPEG: a random crop of a scikit-image photo, resized, with sensor noise."""
    rng = np.random.default_rng(1_000_003 + index)
    photos = real_photographs()
    _, photo = photos[int(rng.integers(len(photos)))]
    long_side = int(rng.integers(SHORTEST_LONG_SIDE, LONGEST_LONG_SIDE + 1))
    aspect = ASPECT_RATIOS[int(rng.integers(len(ASPECT_RATIOS)))]
    short_side = int(round(long_side / aspect))
    width, height = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    photo_h, photo_w = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    crop_w = max(16, int(photo_w * scale))
    crop_h = max(16, min(photo_h, int(crop_w * height / width)))
    top = int(rng.integers(0, photo_h - crop_h + 1))
    left = int(rng.integers(0, photo_w - crop_w + 1))
    crop = Image.fromarray(photo[top : top + crop_h, left : left + crop_w]).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(crop, dtype=np.int16) + rng.normal(0, 3.0, size=(height, width, 1)).astype(np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if rng.random() < ROTATED_FRACTION:
        image = image.transpose(Image.Transpose.ROTATE_90)  # stored sideways; orientation 6 turns it upright
        exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(80, 96)), exif=exif.tobytes())
    return buffer.getvalue()


def cached_images(count: int, cache: Path = IMAGE_CACHE, progress: bool = True) -> list[Path]:
    """Paths of `count` benchmark JPEGs, generating only those not cached yet."""
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    paths = [cache / f"img-{index:05d}.jpg" for index in range(count)]
    missing = [(index, path) for index, path in enumerate(paths) if not path.exists()]
    for index, path in tqdm(missing, desc="generating benchmark JPEGs", unit="img", disable=not progress or not missing):
        staging = path.with_suffix(".tmp")
        staging.write_bytes(benchmark_jpeg(index))
        staging.replace(path)
    return paths


def archive_prefix(size: int) -> str:
    return f"archive-{size:06d}"


def upload_archives(endpoint: str, paths: list[Path], sizes: list[int], progress: bool = True) -> dict[int, str]:
    """One S3 prefix per archive size holding the first `size` images; returns size -> s3:// URI."""
    from tqdm import tqdm

    from pipeline.local_s3 import s3_client

    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    total = sum(sizes)
    with tqdm(total=total, desc="uploading to loopback S3", unit="obj", disable=not progress) as bar:
        for size in sizes:
            prefix = archive_prefix(size)
            for path in paths[:size]:
                client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
                bar.update()
    return {size: f"s3://{BUCKET}/{archive_prefix(size)}/" for size in sizes}


def describe_images(paths: list[Path]) -> dict:
    """Pixel and byte statistics of the benchmark images, for the results file."""
    sides, pixels, sizes = [], [], []
    for path in paths:
        with Image.open(path) as image:
            width, height = image.size
        sides.append(max(width, height))
        pixels.append(width * height)
        sizes.append(path.stat().st_size)
    return {
        "count": len(paths),
        "long_side_px": {"min": int(min(sides)), "median": float(np.median(sides)), "max": int(max(sides))},
        "megapixels_mean": round(float(np.mean(pixels)) / 1e6, 2),
        "jpeg_kib_mean": round(float(np.mean(sizes)) / 1024, 1),
    }
