"""Training inputs as downloaded: real/fake folders, OpenFake-style Parquet, and image + mask pairs.

Everything here turns a user's dataset layout into a list of small, picklable
sample records (so Ray can ship them to training workers) plus a fingerprint
that identifies exactly which data a checkpoint was trained on.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
REAL, FAKE = 0, 1
# Folder names, lower-cased, that name a class. Labels come from these names, never from sort order.
REAL_FOLDER_NAMES = ("real", "0_real", "authentic")
FAKE_FOLDER_NAMES = ("fake", "1_fake", "generated", "ai", "synthetic")
LABEL_NAMES = {"real": REAL, "fake": FAKE, "0": REAL, "1": FAKE}


class DatasetError(ValueError):
    """A dataset cannot be used; the message names the input and the fix."""


@dataclass(frozen=True)
class LabelledImage:
    """One classifier sample: an image file (or a Parquet row) and its label (real = 0, fake = 1)."""

    uri: str
    label: int
    row: int | None = None  # row index inside a Parquet file; None for an image file
    family: str | None = None  # generator family (the folder under `fake/`, or Parquet's `model`); None if unknown


@dataclass(frozen=True)
class ImageMaskPair:
    """One segmenter sample: an image and the mask of its manipulated pixels (None = authentic)."""

    image_uri: str
    mask_uri: str | None


# --- discovery -------------------------------------------------------------------------------------


def _filesystem(uri: str):
    filesystem, path = fsspec.core.url_to_fs(str(uri))
    return filesystem, path


def _is_local(filesystem) -> bool:
    return "file" in (filesystem.protocol if isinstance(filesystem.protocol, tuple) else (filesystem.protocol,))


def _full_uri(filesystem, path: str) -> str:
    return path if _is_local(filesystem) else filesystem.unstrip_protocol(path)


def _list_images(filesystem, root: str) -> list[str]:
    return sorted(p for p in filesystem.find(root) if p.lower().endswith(IMAGE_SUFFIXES))


def label_and_family_from_folder(parts: list[str]) -> tuple[int | None, str | None]:
    """The label of the nearest class folder, and the family: the folder right below a `fake/` folder
    (`fake/<family>/x.jpg`, as `forgescan make-dataset real-fake` writes), `real` for real images."""
    for position in range(len(parts) - 1, -1, -1):
        name = parts[position].lower()
        if name in REAL_FOLDER_NAMES:
            return REAL, "real"
        if name in FAKE_FOLDER_NAMES:
            return FAKE, parts[position + 1] if position + 1 < len(parts) else None
    return None, None


def find_labelled_images(root: str | Path) -> list[LabelledImage]:
    """Classifier samples from a folder dataset or from Parquet (a file or a folder of shards).

    Folder layout: images under `real/` and `fake/` folders at any depth (also
    `0_real/`, `1_fake/`, `Real/`, `Fake/`); a folder right below `fake/` names the
    generator family. Parquet: an `image` column (struct with `bytes`, or plain
    binary), a `label` column (`real`/`fake` or 0/1) and, optionally, OpenFake's
    `model` column (the generator: the family of a fake row).
    """
    root = str(root)
    filesystem, path = _filesystem(root)
    if not filesystem.exists(path):
        raise DatasetError(f"Dataset {root} does not exist. Check the path (local folder, file, or s3:// URI).")
    if path.endswith(".parquet") or (filesystem.isdir(path) and not _list_images(filesystem, path)):
        shards = [path] if path.endswith(".parquet") else sorted(p for p in filesystem.find(path) if p.endswith(".parquet"))
        if shards:
            return _parquet_samples(filesystem, shards)
    samples = []
    for file_path in _list_images(filesystem, path):
        relative = file_path[len(path.rstrip("/")) + 1 :].split("/")
        label, family = label_and_family_from_folder(relative[:-1])
        if label is not None:
            samples.append(LabelledImage(_full_uri(filesystem, file_path), label, family=family))
    labels = {s.label for s in samples}
    if labels != {REAL, FAKE}:
        found = "no labelled images" if not samples else f"only {'real' if REAL in labels else 'fake'} images"
        raise DatasetError(
            f"Dataset {root} has {found}. Put images in `real/` and `fake/` subfolders (any depth; "
            "`0_real/` and `1_fake/` work too), or pass Parquet shards with `image` and `label` columns."
        )
    return samples


def _parquet_samples(filesystem, shards: list[str]) -> list[LabelledImage]:
    import pyarrow.parquet as pq

    samples = []
    for shard in shards:
        with filesystem.open(shard, "rb") as handle:
            schema = pq.read_schema(handle)
            if "image" not in schema.names or "label" not in schema.names:
                raise DatasetError(
                    f"Parquet file {_full_uri(filesystem, shard)} has columns {schema.names}; expected an `image` "
                    "column (struct with `bytes`) and a `label` column (real/fake), as in OpenFake."
                )
            handle.seek(0)
            columns = ["label"] + (["model"] if "model" in schema.names else [])
            table = pq.read_table(handle, columns=columns)
            labels = table.column("label").to_pylist()
            models = table.column("model").to_pylist() if "model" in columns else [None] * len(labels)
        for row, (value, model) in enumerate(zip(labels, models)):
            label = LABEL_NAMES.get(str(value).strip().lower())
            if label is None:
                raise DatasetError(
                    f"Parquet file {_full_uri(filesystem, shard)} row {row} has label {value!r}; "
                    "expected `real` or `fake` (or 0 / 1)."
                )
            family = "real" if label == REAL else (str(model) if model is not None else None)
            samples.append(LabelledImage(_full_uri(filesystem, shard), label, row, family))
    if not samples:
        raise DatasetError(f"Parquet shards {shards[:3]} hold no rows.")
    return samples


def find_image_mask_pairs(images: str | Path, masks: str | Path | None = None) -> list[ImageMaskPair]:
    """Segmenter samples: images matched to masks by file stem, any extension (DEFACTO style).

    `images` may also be a dataset root holding `images/` and `masks/` folders
    (the layout `forgescan make-dataset forgery` writes). Mask stems may carry a
    `_gt` or `_mask` suffix (CASIA style). Images without a mask are skipped
    with a warning; when no image has a mask, that is an error.
    """
    images, masks = str(images), None if masks is None else str(masks)
    filesystem, image_root = _filesystem(images)
    if masks is None:
        if filesystem.isdir(f"{image_root}/images") and filesystem.isdir(f"{image_root}/masks"):
            image_root, mask_root = f"{image_root}/images", f"{image_root}/masks"
        else:
            raise DatasetError(
                f"Dataset {images} has no `images/` and `masks/` folders. Pass --masks MASK_FOLDER, "
                "or point at a folder holding `images/` and `masks/`."
            )
    else:
        mask_root = _filesystem(masks)[1]
    for label, root in (("image", image_root), ("mask", mask_root)):
        if not filesystem.isdir(root):
            raise DatasetError(f"The {label} folder {_full_uri(filesystem, root)} does not exist; check the path.")
    mask_by_stem = {}
    for mask_path in _list_images(filesystem, mask_root):
        stem = Path(mask_path).stem
        mask_by_stem[stem] = mask_path
        mask_by_stem.setdefault(re.sub(r"(_gt|_mask)$", "", stem), mask_path)
    pairs, unmatched = [], []
    for image_path in _list_images(filesystem, image_root):
        mask_path = mask_by_stem.get(Path(image_path).stem)
        if mask_path is None:
            unmatched.append(image_path)
            continue
        pairs.append(ImageMaskPair(_full_uri(filesystem, image_path), _full_uri(filesystem, mask_path)))
    if not pairs:
        raise DatasetError(
            f"No image in {_full_uri(filesystem, image_root)} has a mask with the same file stem in "
            f"{_full_uri(filesystem, mask_root)}. Masks must be named like their images (any extension)."
        )
    if unmatched:
        import warnings

        warnings.warn(f"{len(unmatched)} images have no mask and are skipped, e.g. {unmatched[:3]}", stacklevel=2)
    return pairs


# --- fingerprints ----------------------------------------------------------------------------------


def fingerprint_files(uris: list[str]) -> dict[str, object]:
    """sha256 over the sorted (file name, size) pairs: identifies a dataset without reading every byte."""
    digest = hashlib.sha256()
    seen = set()
    for uri in sorted(set(uris)):
        filesystem, path = _filesystem(uri)
        digest.update(f"{Path(path).name}\t{filesystem.size(path)}\n".encode())
        seen.add(uri)
    return {"sha256": digest.hexdigest(), "files": len(seen), "method": "sha256 of sorted (file name, size)"}


def fingerprint_samples(samples: list[LabelledImage] | list[ImageMaskPair]) -> dict[str, object]:
    """The training-data fingerprint for a model card; Parquet rows are hashed by content."""
    if samples and isinstance(samples[0], LabelledImage) and samples[0].row is not None:
        digest = hashlib.sha256()
        for sample in sorted(samples, key=lambda s: (s.uri, s.row)):
            digest.update(hashlib.sha256(read_sample_bytes(sample)).digest() + bytes([sample.label]))
        return {"sha256": digest.hexdigest(), "rows": len(samples), "method": "sha256 of Parquet row image hashes + labels"}
    uris = []
    for sample in samples:
        uris += [sample.uri] if isinstance(sample, LabelledImage) else [sample.image_uri] + ([sample.mask_uri] if sample.mask_uri else [])
    summary = fingerprint_files(uris)
    if samples and isinstance(samples[0], LabelledImage):
        summary["real"] = sum(s.label == REAL for s in samples)
        summary["fake"] = sum(s.label == FAKE for s in samples)
        families = sorted({s.family for s in samples if s.label == FAKE and s.family})
        if families:
            summary["fake_families"] = {family: sum(s.family == family for s in samples) for family in families}
    return summary


def manipulation_families_of(data: str | Path, pairs: list[ImageMaskPair]) -> list[tuple[str, ...]]:
    """The manipulation families applied to each pair's image (none for an authentic one), read from the
    `samples.csv` that `forgescan make-dataset manipulations` writes at the dataset's root."""
    import csv
    import io

    filesystem, root = _filesystem(str(data))
    table = f"{root}/samples.csv"
    if not filesystem.isfile(table):
        raise DatasetError(f"{data} has no samples.csv, so the manipulation family of its images is unknown. Per-family "
                           "figures and --exclude-family need a dataset made by `forgescan make-dataset manipulations`.")
    with filesystem.open(table, "rb") as handle:
        rows = list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")))
    by_stem = {Path(row["file"]).stem: tuple(f for f in (row.get("families") or "").split("+") if f) for row in rows}
    missing = [pair.image_uri for pair in pairs if Path(pair.image_uri).stem not in by_stem]
    if missing:
        raise DatasetError(f"{len(missing)} images of {data} have no row in its samples.csv, e.g. {missing[:2]}; "
                           "make the dataset again with `forgescan make-dataset manipulations`.")
    return [by_stem[Path(pair.image_uri).stem] for pair in pairs]


def without_manipulation_families(
    pairs: list[ImageMaskPair], families: list[tuple[str, ...]], excluded: list[str] | tuple[str, ...],
    missing_ok: bool = False,
) -> list[ImageMaskPair]:
    """The pairs minus every image that carries one of the `excluded` manipulation families (a leave-one-family-out
    run never sees the family, not even as a second edit). A family the dataset does not hold is refused (a
    typo in --exclude-family), unless `missing_ok` (calibrating such a run: nothing of it to leave out)."""
    known = {family for applied in families for family in applied}
    missing = sorted(set(excluded) - known)
    if missing and not missing_ok:
        raise DatasetError(f"Families {missing} are not in this dataset; it has {sorted(known)}.")
    return [pair for pair, applied in zip(pairs, families) if not set(applied) & set(excluded)]


def without_families(samples: list[LabelledImage], excluded: list[str] | tuple[str, ...],
                     missing_ok: bool = False) -> list[LabelledImage]:
    """The samples minus the fakes of the `excluded` generator families (for leave-one-family-out runs). A family
    the dataset does not hold is refused, unless `missing_ok` (as without_manipulation_families)."""
    if not excluded:
        return list(samples)
    known = {s.family for s in samples if s.label == FAKE}
    missing = sorted(set(excluded) - known)
    if missing and not missing_ok:
        raise DatasetError(f"Generator families {missing} are not in this dataset; its fake families are {sorted(f for f in known if f)}. "
                           "Families are the folders under `fake/` (or Parquet's `model` column).")
    return [s for s in samples if not (s.label == FAKE and s.family in excluded)]


# --- reading -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _parquet_image_column(uri: str):
    import pyarrow.parquet as pq

    filesystem, path = _filesystem(uri)
    if _is_local(filesystem):
        return pq.read_table(path, columns=["image"], memory_map=True).column("image")
    with filesystem.open(path, "rb") as handle:
        return pq.read_table(handle, columns=["image"]).column("image")


def read_sample_bytes(sample: LabelledImage) -> bytes:
    if sample.row is None:
        with fsspec.open(sample.uri, "rb") as handle:
            return handle.read()
    value = _parquet_image_column(sample.uri)[sample.row].as_py()
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        raise DatasetError(f"Parquet file {sample.uri} row {sample.row} has no image bytes.")
    return data


def open_rgb(data: bytes, name: str) -> Image.Image:
    """Decode bytes to RGB after EXIF orientation, as the scanner does."""
    try:
        image = Image.open(io.BytesIO(data))
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except Exception as error:
        raise DatasetError(f"Cannot decode image {name}: {error}. Remove or replace the file.") from None


LOSSLESS_MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif")


def load_class_mask(uri: str, size: tuple[int, int], num_classes: int | None = None, threshold: int = 127) -> np.ndarray:
    """A uint8 mask of class ids at `size` (width, height), resized nearest to the image.

    Two layouts are read: class-indexed masks (a lossless PNG/TIFF/BMP, greyscale or palette, whose
    pixel values are class ids: 0 authentic, 1 spliced, ...; every value below 128) and binary masks
    (white = manipulated, e.g. 0/255 PNG or DEFACTO's JPEG probe masks), whose pixels above
    `threshold` become class 1 (mid-grey removes JPEG noise).

    Args:
        num_classes: the model's class count; a class id at or above it is an error naming the file.
    """
    with fsspec.open(uri, "rb") as handle:
        mask = Image.open(io.BytesIO(handle.read()))
        mask.load()
    if mask.mode not in ("L", "P"):
        mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    values = np.asarray(mask, dtype=np.uint8)
    class_indexed = str(uri).lower().endswith(LOSSLESS_MASK_SUFFIXES) and int(values.max(initial=0)) <= threshold
    if not class_indexed:
        return (values > threshold).astype(np.uint8)
    if num_classes is not None and int(values.max(initial=0)) >= num_classes:
        raise DatasetError(
            f"Mask {uri} holds class id {int(values.max())}, but the model has {num_classes} classes (ids 0-{num_classes - 1}). "
            "Name every class in --classes (class id = position), or fix the mask."
        )
    return values


def load_mask(uri: str, size: tuple[int, int], threshold: int = 127) -> np.ndarray:
    """A boolean mask at `size` (width, height): True where manipulated (any class of a class-indexed mask,
    or above `threshold` in a binary one: DEFACTO probe masks are JPEG, so mid-grey removes compression noise)."""
    return load_class_mask(uri, size, threshold=threshold) > 0
