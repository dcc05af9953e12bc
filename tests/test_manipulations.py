"""Manipulation families for the multi-class segmenter: edits stay in their labelled region, masks carry class ids."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageFilter

from forensics.manipulations import (
    FAMILY_CLASS, MANIPULATION_FAMILIES, PROCEDURES, SAMPLES_FILE, ManipulationProcedures, PhotoSampling, manipulate, native_crop,
    splice, stroke_region_mask, superpixel_region_mask, write_manipulation_dataset,
)
from forensics.model_card import MANIPULATION_CLASSES
from forensics.synthetic import photographs_for_split, random_crop


def _grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * pixels + 1))) > 0


@pytest.mark.parametrize("procedures", sorted(PROCEDURES))
@pytest.mark.parametrize("family", MANIPULATION_FAMILIES)
def test_each_family_edits_only_the_region_it_labels(family, procedures):
    rng = np.random.default_rng(3)
    photos = photographs_for_split("train")
    image = random_crop(rng, photos[0][1], 96)
    edited, mask, details = manipulate(rng, image, family, donor_photo=photos[1][1], procedures=PROCEDURES[procedures])
    assert edited.shape == image.shape and edited.dtype == np.uint8 and mask.shape == (96, 96) and details
    assert mask.any()
    far_away = ~_grown(mask, 10)  # feathered edges may touch a few pixels just outside the labelled region
    assert np.array_equal(edited[far_away], image[far_away])
    assert np.abs(edited[mask].astype(int) - image[mask].astype(int)).mean() > 0.5


def test_unknown_family_lists_the_families():
    with pytest.raises(ValueError, match="copy_move"):
        manipulate(np.random.default_rng(0), np.zeros((32, 32, 3), np.uint8), "warp")


def test_dataset_masks_hold_the_class_ids_of_the_families_applied_and_splits_share_no_photograph(tmp_path):
    counts = write_manipulation_dataset(tmp_path / "train", 14, seed=1, size=64, split="train", authentic_fraction=0.15)
    write_manipulation_dataset(tmp_path / "heldout", 6, seed=2, size=64, split="heldout")
    assert sum(counts[f] for f in MANIPULATION_FAMILIES) >= 11 and all(counts[f] >= 1 for f in MANIPULATION_FAMILIES)
    photos = {}
    for split in ("train", "heldout"):
        rows = list(csv.DictReader(open(tmp_path / split / "samples.csv")))
        photos[split] = {r["photo"] for r in rows} | {d for r in rows for d in r["donors"].split("+") if d}
        for row in rows:
            image = Image.open(tmp_path / split / row["file"])
            ids = np.asarray(Image.open(tmp_path / split / row["mask"]))
            assert ids.shape == (image.height, image.width)  # resized with the post-processing chain
            expected = {FAMILY_CLASS[f] for f in row["families"].split("+") if f}
            assert set(np.unique(ids)) - {0} <= expected  # a second edit may cover the first entirely
            assert bool(expected) == bool((ids > 0).any())
            assert row["chain"].split(" > ")[-1].split()[0] in ("jpeg", "webp", "png")
    assert not photos["train"] & photos["heldout"]
    assert (tmp_path / "train" / "classes.txt").read_text().splitlines()[1] == f"1 {MANIPULATION_CLASSES[1]}"


def _found_in(crop: np.ndarray, photo: np.ndarray) -> bool:
    """Whether `crop` is a window of `photo` (or of its mirror image), pixel for pixel."""
    size = crop.shape[0]
    for candidate in (photo, photo[:, ::-1]):
        rows, columns = np.nonzero((candidate[: -size + 1, : -size + 1] == crop[0, 0]).all(-1))
        if any(np.array_equal(candidate[r : r + size, c : c + size], crop) for r, c in zip(rows, columns)):
            return True
    return False


def test_a_native_crop_holds_the_photographs_own_pixels_and_a_rescaled_crop_does_not():
    rng = np.random.default_rng(5)
    photo = photographs_for_split("train")[0][1]
    native, note = PhotoSampling(native_probability=1.0).crop(rng, photo, 64)
    assert note == "native crop" and native.shape == (64, 64, 3) and _found_in(native, photo)
    rescaled, note = PhotoSampling(native_probability=0.0).crop(rng, photo, 64)
    assert note == "rescaled crop" and not _found_in(rescaled, photo)
    assert native_crop(rng, photo[:32, :32], 64) is None  # too small for a native crop: the caller rescales


def test_a_camera_jpeg_photograph_is_the_photograph_after_one_jpeg_at_the_noted_quality():
    import io

    photo = photographs_for_split("train")[0][1][:96, :96].copy()
    camera, note = PhotoSampling(camera_jpeg_probability=1.0).camera_photo(np.random.default_rng(2), photo)
    quality = int(note.rsplit(" ", 1)[1])
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=quality)
    assert note.startswith("camera jpeg") and 75 <= quality <= 95
    assert np.array_equal(camera, np.asarray(Image.open(buffer).convert("RGB")))
    unchanged, note = PhotoSampling(camera_jpeg_probability=0.0).camera_photo(np.random.default_rng(2), photo)
    assert note == "pristine" and unchanged is photo


def test_dataset_rows_say_how_each_host_was_cut(tmp_path):
    write_manipulation_dataset(tmp_path, 12, seed=4, size=64, split="train",
                               sampling=PhotoSampling(native_probability=0.5, camera_jpeg_probability=0.5))
    hosts = [row["host"] for row in csv.DictReader(open(tmp_path / "samples.csv"))]
    assert {h.split(" of a ")[0] for h in hosts} == {"native crop", "rescaled crop"}
    assert any("camera jpeg" in h for h in hosts) and any("pristine" in h for h in hosts)


def test_make_dataset_manipulations_records_its_command(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from jobs import cli

    monkeypatch.setattr(sys, "argv", ["forgescan", "make-dataset", "manipulations", "--output", str(tmp_path / "d"),
                                      "--count", "3", "--size", "48", "--family", "retouch"])
    assert cli.main() == 0
    record = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert record["command"].startswith("forgescan make-dataset manipulations") and record["retouch"] >= 1
    assert record["command"].endswith("--procedures standard")  # named, so the record outlives a new default
    monkeypatch.setattr(sys, "argv", ["forgescan", "make-dataset", "manipulations", "--output", str(tmp_path / "e"),
                                      "--count", "3", "--family", "warp"])
    assert cli.main() == 2 and "supported families" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["forgescan", "make-dataset", "real-fake", "--output", str(tmp_path / "f"),
                                      "--count", "3", "--procedures", "varied"])
    assert cli.main() == 2 and "--procedures is for `manipulations`" in capsys.readouterr().err


def test_a_superpixel_region_follows_the_pictures_edges():
    colours = np.random.default_rng(0).integers(0, 256, (8, 8, 3))
    blocks = np.kron(colours, np.ones((32, 32, 1))).astype(np.uint8)  # 64 flat blocks of distinct colours
    for seed in range(6):
        mask = superpixel_region_mask(np.random.default_rng(seed), blocks)
        assert 0.02 <= mask.mean() <= 0.45
        covered = mask.reshape(8, 32, 8, 32).mean(axis=(1, 3))
        assert np.isin(covered, (0.0, 1.0)).mean() >= 0.9  # whole blocks in or out: the boundary runs along edges


def test_brush_strokes_are_bands_not_filled_shapes():
    for seed in range(6):
        mask = stroke_region_mask(np.random.default_rng(seed), 128, 160)
        rows, columns = np.nonzero(mask)
        box = (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
        assert mask.sum() >= 16 and mask.sum() < 0.8 * box


def test_a_rotated_resampled_donor_fills_its_region_with_the_donors_pixels():
    rng = np.random.default_rng(5)
    ramp = np.linspace(140, 230, 300)  # smooth and bright, so no interpolation rings and colour matching stays bright
    host = np.repeat(np.add.outer(ramp[:96], ramp[:96])[..., None] / 2, 3, axis=2).astype(np.uint8)
    donor_photo = np.repeat(np.add.outer(ramp, ramp[::-1])[..., None] / 2, 3, axis=2).astype(np.uint8)
    always = ManipulationProcedures(resample_probability=1.0, resample_factors=(0.5, 2.0), donor_rotation_probability=1.0,
                                    donor_interpolations=("lanczos",))
    for _ in range(4):
        edited, mask, details = splice(rng, host, donor_photo, PhotoSampling(), always)
        assert "rotated" in details and "(lanczos)" in details
        # no corner left black by the rotation: every labelled pixel is bright, the donor's or blended with the host
        assert edited[mask].min() >= 60


def test_varied_procedures_draw_every_region_shape_and_wider_edits(tmp_path):
    write_manipulation_dataset(tmp_path, 48, seed=7, size=64, split="train", procedures=PROCEDURES["varied"])
    details = " ".join(row["details"] for row in csv.DictReader(open(tmp_path / "samples.csv")))
    assert "biharmonic" in details and "rotated" in details and "resampled" in details
    standard = tmp_path / "standard"
    write_manipulation_dataset(standard, 48, seed=7, size=64, split="train")
    assert open(tmp_path / "samples.csv").read() != open(standard / "samples.csv").read()


def test_varied_regions_range_from_small_objects_to_large_areas():
    image = random_crop(np.random.default_rng(8), photographs_for_split("train")[0][1], 128)
    rng = np.random.default_rng(9)
    shares = np.array([PROCEDURES["varied"].region(rng, image).mean() for _ in range(80)])
    standard = np.array([PROCEDURES["standard"].region(rng, image).mean() for _ in range(80)])
    assert (shares < 0.015).mean() >= 0.1 and shares.max() >= 0.15  # log-uniform from 0.5 %: many small regions
    assert (standard < 0.015).mean() < 0.05  # the standard recipe's regions start at about 3 %


def test_hosts_and_donors_shot_through_a_capture_condition_say_so_and_default_hosts_do_not(tmp_path):
    from forensics.generators import CaptureConditions

    sharpened = PhotoSampling(capture_conditions=CaptureConditions(probability=1.0, conditions=("sharpening",)))
    write_manipulation_dataset(tmp_path / "shot", 6, seed=3, size=48, split="calibration", families=("splice",),
                               authentic_fraction=0.0, sampling=sharpened)
    rows = list(csv.DictReader(open(tmp_path / "shot" / SAMPLES_FILE)))
    assert rows and all(" of a sharpening " in row["host"] for row in rows)
    assert all("(donor photograph sharpening " in row["details"] for row in rows)
    write_manipulation_dataset(tmp_path / "plain", 6, seed=3, size=48, split="calibration", families=("splice",),
                               authentic_fraction=0.0)
    assert not any("sharpening" in row["host"] for row in csv.DictReader(open(tmp_path / "plain" / SAMPLES_FILE)))
