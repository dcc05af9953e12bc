"""Synthetic forensic data from real photographs that ship with scikit-image.

No dataset can be downloaded on the build machines, so the demo archive and
the demo checkpoints are built from `skimage.data` photographs:
- spliced images: a region from one photo pasted into another, with the exact
  mask, varied shapes, scales, feathered or hard edges, and JPEG re-compression;
- a stand-in for generated images: a photo re-synthesised through an
  up-sampling decoder (down-sample, then a strided transposed convolution with
  a fixed "generator" kernel) -- the periodic up-sampling trace that detectors
  of generated images learn. These are stand-ins, not real generator output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PHOTO_NAMES = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "retina", "brick", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "clock", "coins", "cell", "page",
)
MASK_SHAPES = ("ellipse", "rectangle", "polygon", "blob")


@functools.lru_cache(maxsize=1)
def real_photographs() -> tuple[tuple[str, np.ndarray], ...]:
    """The scikit-image photographs as RGB uint8 arrays, plus the stereo motorcycle pair."""
    import skimage.data

    photos = []
    for name in PHOTO_NAMES:
        photos.append((name, _as_rgb(getattr(skimage.data, name)())))
    left, right, _ = skimage.data.stereo_motorcycle()
    photos += [("motorcycle_left", _as_rgb(left)), ("motorcycle_right", _as_rgb(right))]
    return tuple(photos)


def _as_rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def random_crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A random square crop (random scale, random flip) resized to size x size."""
    height, width = photo.shape[:2]
    side = int(rng.uniform(0.45, 1.0) * min(height, width))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
    array = np.asarray(crop)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def random_region_mask(rng: np.random.Generator, height: int, width: int, shape: str | None = None,
                       share: float | None = None) -> np.ndarray:
    """A boolean mask of one region covering roughly `share` of the image (default: drawn from 3%-30%);
    `shape` one of MASK_SHAPES (default: drawn)."""
    if shape is None:
        shape = MASK_SHAPES[int(rng.integers(len(MASK_SHAPES)))]
    area = (rng.uniform(0.03, 0.30) if share is None else share) * height * width
    region_h = int(np.clip(np.sqrt(area * rng.uniform(0.5, 2.0)), 8, height - 2))
    region_w = int(np.clip(area / region_h, 8, width - 2))
    top = int(rng.integers(0, height - region_h))
    left = int(rng.integers(0, width - region_w))
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    box = (left, top, left + region_w, top + region_h)
    if shape == "ellipse":
        draw.ellipse(box, fill=255)
    elif shape == "rectangle":
        draw.rectangle(box, fill=255)
    elif shape == "polygon":
        count = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(0.55, 1.0, count)
        cx, cy = left + region_w / 2, top + region_h / 2
        points = [(cx + r * np.cos(a) * region_w / 2, cy + r * np.sin(a) * region_h / 2) for a, r in zip(angles, radii)]
        draw.polygon(points, fill=255)
    else:  # blob: smoothed noise inside the box
        noise = rng.random((max(region_h // 8, 2), max(region_w // 8, 2)))
        blob = Image.fromarray((noise * 255).astype(np.uint8)).resize((region_w, region_h), Image.BICUBIC)
        blob = blob.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 255 if v > 120 else 0)
        canvas.paste(blob, (left, top))
    mask = np.asarray(canvas) > 127
    if mask.sum() < 16:  # degenerate blob: fall back to the box
        mask = np.zeros((height, width), bool)
        mask[top : top + region_h, left : left + region_w] = True
    return mask


def splice(rng: np.random.Generator, target: np.ndarray, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paste a region of `donor` into `target`; returns (image, boolean mask of pasted pixels)."""
    height, width = target.shape[:2]
    mask = random_region_mask(rng, height, width)
    shift_y = int(rng.integers(-height // 4, height // 4 + 1))
    shift_x = int(rng.integers(-width // 4, width // 4 + 1))
    donor = np.roll(donor, (shift_y, shift_x), axis=(0, 1))
    donor = _adjust_colour(rng, donor)
    alpha = mask.astype(np.float32)
    if rng.random() < 0.5:  # feathered edge; the mask stays where the donor dominates
        radius = float(rng.uniform(0.8, 2.5))
        alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)))
        alpha = alpha.astype(np.float32) / 255.0
        mask = alpha >= 0.5
    blended = target.astype(np.float32) * (1 - alpha[..., None]) + donor.astype(np.float32) * alpha[..., None]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8), mask


def _adjust_colour(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    gain = rng.uniform(0.8, 1.2, size=3)
    bias = rng.uniform(-15, 15, size=3)
    return np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _generator_kernel(seed: int) -> np.ndarray:
    """A fixed stride-2 transposed-convolution kernel: bilinear up-sampling plus a learned-looking perturbation."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    bilinear = torch.tensor([0.25, 0.75, 0.75, 0.25])
    base = torch.outer(bilinear, bilinear)
    kernel = torch.zeros(3, 3, 4, 4)
    for channel in range(3):
        kernel[channel, channel] = base * (1 + 0.35 * torch.randn(4, 4, generator=generator))
        kernel[channel] += 0.04 * torch.randn(3, 4, 4, generator=generator)
    return kernel.numpy()


def generated_standin(rng: np.random.Generator, image: np.ndarray, generator_seed: int | None = None) -> np.ndarray:
    """Re-synthesise `image` through an up-sampling decoder, leaving periodic up-sampling traces."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    seed = int(rng.integers(0, 4)) if generator_seed is None else generator_seed
    kernel = torch.from_numpy(_generator_kernel(seed))
    small = Image.fromarray(image).resize((max(width // 2, 2), max(height // 2, 2)), Image.BOX)
    tensor = torch.from_numpy(np.asarray(small, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    upsampled = F.conv_transpose2d(tensor, kernel, stride=2, padding=1)
    upsampled = F.interpolate(upsampled, size=(height, width), mode="nearest") if upsampled.shape[-2:] != (height, width) else upsampled
    array = upsampled[0].permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().numpy()
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class SampleObject:
    relative_path: str
    kind: str  # authentic | spliced | generated_standin
    mask_path: str | None


def write_sample_archive(directory: str | Path, seed: int = 0, spliced_per_photo: int = 1, size: int = 512) -> list[SampleObject]:
    """The bundled demo archive: real photos, spliced copies with known masks, and generated stand-ins.

    Layout: `images/{authentic,spliced,generated,provenance,copies}/*` (what gets scanned) and
    `ground_truth/*.png` masks for the spliced images (outside the scanned folder).
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    photos = real_photographs()
    objects: list[SampleObject] = []
    for folder in ("images/authentic", "images/spliced", "images/generated", "ground_truth"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    for index, (name, photo) in enumerate(photos):
        base = random_crop(rng, photo, size)
        path = f"images/authentic/{name}.jpg"
        Image.fromarray(base).save(directory / path, quality=92)
        objects.append(SampleObject(path, "authentic", None))
        for copy in range(spliced_per_photo):
            donor_name, donor_photo = photos[(index + 1 + copy + int(rng.integers(len(photos) - 1))) % len(photos)]
            if donor_name == name:
                donor_name, donor_photo = photos[(index + 1) % len(photos)]
            spliced, mask = splice(rng, base, random_crop(rng, donor_photo, size))
            stem = f"{name}_spliced_from_{donor_name}_{copy}"
            path = f"images/spliced/{stem}.jpg"
            Image.fromarray(spliced).save(directory / path, quality=92)
            Image.fromarray(mask.astype(np.uint8) * 255).save(directory / f"ground_truth/{stem}.png")
            objects.append(SampleObject(path, "spliced", f"ground_truth/{stem}.png"))
        if index % 2 == 0:
            path = f"images/generated/{name}_standin.jpg"
            Image.fromarray(generated_standin(rng, random_crop(rng, photo, size))).save(directory / path, quality=92)
            objects.append(SampleObject(path, "generated_standin", None))
    objects += write_provenance_examples(directory, photos[0], size)
    return objects


def write_provenance_examples(directory: Path, photo: tuple[str, np.ndarray], size: int) -> list[SampleObject]:
    """`images/provenance/`: one file per declared-provenance signal, and `images/copies/`: near duplicates of one
    authentic photo (re-encoded, resized, 1% border trimmed; the spliced copies and their hosts are in `spliced/`)."""
    from forensics import content_credentials as credentials

    name, array = photo
    base = np.asarray(Image.fromarray(random_crop(np.random.default_rng(1), array, size)))
    (directory / "images/provenance").mkdir(parents=True, exist_ok=True)
    (directory / "images/copies").mkdir(parents=True, exist_ok=True)
    signed = credentials.sign_with_c2pa(credentials.jpeg(base, quality=92), "image/jpeg", "trainedAlgorithmicMedia",
                                        generator="forgescan demo generator")
    files = {
        "provenance/c2pa_signed_ai_source.jpg": signed,
        "provenance/c2pa_tampered_after_signing.jpg": credentials.tamper_pixels(signed),
        "provenance/webui_generation_parameters.png": credentials.png(base, {"parameters": credentials.A1111_PARAMETERS}),
        "provenance/xmp_ai_source.jpg": credentials.jpeg(base, xmp=credentials.xmp_packet("trainedAlgorithmicMedia")),
        f"copies/{name}.jpg": credentials.jpeg(base, quality=92),
        f"copies/{name}_reencoded.jpg": credentials.jpeg(base, quality=40),
        f"copies/{name}_half_size.jpg": credentials.jpeg(np.asarray(Image.fromarray(base).resize((size // 2, size // 2)))),
    }
    trim = max(1, round(0.01 * size))
    files[f"copies/{name}_trimmed.jpg"] = credentials.jpeg(base[trim:-trim, trim:-trim])
    objects = []
    for relative, payload in files.items():
        (directory / "images" / relative).write_bytes(payload)
        objects.append(SampleObject(f"images/{relative}", relative.split("/", 1)[0], None))
    return objects


# --- Training datasets -----------------------------------------------------------------------------
# Three disjoint sets of photographs: `train`, `calibration` (temperatures and thresholds are fitted
# here) and `heldout` (test figures). No photograph is in two of them, so held-out figures measure
# generalisation to unseen scenes and calibration never sees a test photograph. The motorcycle
# stereo pair (two views of one scene) is held out together.
HELD_OUT_PHOTOS = ("chelsea", "coins", "grass", "motorcycle_left", "motorcycle_right")
CALIBRATION_PHOTOS = ("rocket", "clock", "gravel")
PHOTO_SPLITS = ("train", "calibration", "heldout", "all")
# Share of untouched images (empty masks) in a forgery or manipulations dataset: what thresholds are set against.
AUTHENTIC_FRACTION = 0.2


def photographs_for_split(split: str, package_photographs: str | Path | None = None) -> tuple[tuple[str, np.ndarray], ...]:
    """The photographs of one split: `train` (all but the held-out and calibration photos), `calibration`,
    `heldout`, or `all`; with `package_photographs` (a folder fetched by
    forensics.package_photographs), that folder's photographs of the split too."""
    if split not in PHOTO_SPLITS:
        raise ValueError(f"Wrong photo split `{split}`, supported splits: {list(PHOTO_SPLITS)}")
    photos = real_photographs()
    extra = ()
    if package_photographs is not None:
        from forensics.package_photographs import load_package_photographs

        extra = tuple((name, photo) for name, member_of, photo in load_package_photographs(package_photographs)
                      if split in ("all", member_of))
    if split == "all":
        return photos + extra
    members = {"heldout": HELD_OUT_PHOTOS, "calibration": CALIBRATION_PHOTOS}.get(split)
    if members is None:
        return tuple((name, photo) for name, photo in photos if name not in HELD_OUT_PHOTOS + CALIBRATION_PHOTOS) + extra
    return tuple((name, photo) for name, photo in photos if name in members) + extra


SAMPLES_FILE = "samples.csv"  # one row per image of a real-fake dataset: file, label, family, photo, chain


def write_real_fake_dataset(
    directory: str | Path,
    n: int,
    seed: int,
    size: int = 128,
    split: str = "train",
    max_size: int | None = None,
    families: tuple[str, ...] | None = None,
    post_processing=None,
    package_photographs: str | Path | None = None,
    capture_conditions=None,
) -> dict[str, int]:
    """A classifier dataset: `real/*` photo crops and `fake/<family>/*` re-drawn by generator families.

    Half the images are real; the other half are spread evenly over `families`
    (default: every family of forensics.generators). Both classes are cut from
    the same photographs at many crops and scales, final sizes uniform in
    [size, max_size] (or `size`), and go through the same random post-processing
    chain (resize, mild noise, JPEG / WebP / PNG; forensics.generators.post_process),
    so only the generator's trace separates them. With `capture_conditions`
    (forensics.generators.CaptureConditions), a share of the crops is first shot
    out of focus, shaken, noise-reduced or sharpened, before either class is made
    from it. `samples.csv` records each
    image's label, family, source photograph and chain. With `package_photographs`
    (a folder of forensics.package_photographs), its photographs of `split` join in.
    Returns images per class and family.
    """
    import csv

    from forensics.generators import (GENERATOR_FAMILIES, REAL_FAMILY, CaptureConditions, PostProcessing, capture,
                                      generate, post_process)

    families = tuple(families or GENERATOR_FAMILIES)
    unknown = sorted(set(families) - set(GENERATOR_FAMILIES))
    if unknown:
        raise ValueError(f"Wrong generator families {unknown}, supported families: {list(GENERATOR_FAMILIES)}")
    post_processing = post_processing or PostProcessing()
    capture_conditions = capture_conditions or CaptureConditions()
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    photos = photographs_for_split(split, package_photographs)
    counts = {"real": 0, "fake": 0, **{family: 0 for family in families}}
    (directory / "real").mkdir(parents=True, exist_ok=True)
    for family in families:
        (directory / "fake" / family).mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        is_fake = index % 2 == 1
        family = families[(index // 2) % len(families)] if is_fake else REAL_FAMILY
        name, photo = photos[int(rng.integers(len(photos)))]
        final = size if max_size is None else int(rng.integers(size, max_size + 1))
        scale = post_processing.draw_scale(rng)
        drawn = max(16, int(round(final / scale)))  # the chain's resize brings it to `final`
        crop = random_crop(rng, photo, drawn)
        crop, shot = capture(rng, crop, capture_conditions)
        if is_fake:
            crop = generate(rng, crop, family)
        data, suffix, chain = post_process(rng, crop, (final, final), post_processing)
        chain = " > ".join(step for step in (shot, chain) if step)
        relative = f"fake/{family}" if is_fake else "real"
        file_name = f"{seed}_{index:05d}_{name}{suffix}"
        (directory / relative / file_name).write_bytes(data)
        rows.append({"file": f"{relative}/{file_name}", "label": "fake" if is_fake else "real", "family": family,
                     "photo": name, "split": split, "chain": chain})
        counts["fake" if is_fake else "real"] += 1
        if is_fake:
            counts[family] += 1
    with open(directory / SAMPLES_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    return counts


def write_forgery_dataset(
    directory: str | Path,
    n: int,
    seed: int,
    size: int = 256,
    split: str = "train",
    authentic_fraction: float = AUTHENTIC_FRACTION,
    jpeg_quality=(70, 96),
) -> dict[str, int]:
    """A segmenter dataset, DEFACTO-style: `images/<stem>.jpg` and `masks/<stem>.png` (255 = pasted).

    Most images are splices (a region of another photograph pasted in, exact
    mask); `authentic_fraction` of them are untouched crops with an empty mask,
    so thresholds can be set at a false-positive rate. Returns counts per kind.
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    photos = photographs_for_split(split)
    if len(photos) < 2:
        raise ValueError(f"Split `{split}` has fewer than two photographs; a splice needs a donor.")
    counts = {"spliced": 0, "authentic": 0}
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(n):
        target_index = int(rng.integers(len(photos)))
        name, photo = photos[target_index]
        base = random_crop(rng, photo, size)
        if rng.random() < authentic_fraction:
            image, mask, stem = base, np.zeros((size, size), bool), f"{seed}_{index:05d}_{name}_authentic"
            counts["authentic"] += 1
        else:
            donor_index = (target_index + 1 + int(rng.integers(len(photos) - 1))) % len(photos)
            donor_name, donor_photo = photos[donor_index]
            image, mask = splice(rng, base, random_crop(rng, donor_photo, size))
            stem = f"{seed}_{index:05d}_{name}_spliced_from_{donor_name}"
            counts["spliced"] += 1
        Image.fromarray(image).save(directory / "images" / f"{stem}.jpg", quality=int(rng.integers(*jpeg_quality)))
        Image.fromarray(mask.astype(np.uint8) * 255).save(directory / "masks" / f"{stem}.png")
    return counts
