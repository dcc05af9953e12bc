"""Generator families, capture conditions, post-processing chains and the real/fake dataset writer that records families."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from forensics.generators import (CAPTURE_CONDITIONS, EXTRA_CAPTURE_CONDITIONS, GENERATOR_FAMILIES, CaptureConditions, PostProcessing,
                                  capture, generate, post_process)
from forensics.synthetic import (CALIBRATION_PHOTOS, HELD_OUT_PHOTOS, SAMPLES_FILE, photographs_for_split, random_crop,
                                 write_real_fake_dataset)
from forensics.training import FAKE, REAL, DatasetError, find_labelled_images, fingerprint_samples, without_families

CHEAP_FAMILIES = tuple(family for family in GENERATOR_FAMILIES if family != "trained_upsampler")


@pytest.fixture(scope="module")
def photo_crop():
    return random_crop(np.random.default_rng(0), photographs_for_split("train")[0][1], 66)


@pytest.mark.parametrize("family", CHEAP_FAMILIES)
def test_each_family_redraws_the_photo_at_its_size_without_copying_it(photo_crop, family):
    output = generate(np.random.default_rng(1), photo_crop, family)
    assert output.shape == photo_crop.shape and output.dtype == np.uint8
    difference = np.abs(output.astype(float) - photo_crop).mean()
    assert 0.5 < difference < 40  # re-drawn: not the photo itself, not another picture
    again = generate(np.random.default_rng(1), photo_crop, family)
    assert np.array_equal(output, again)  # seeded


def test_families_are_distinct_processes(photo_crop):
    outputs = {family: generate(np.random.default_rng(2), photo_crop, family).astype(float) for family in CHEAP_FAMILIES}
    for first in CHEAP_FAMILIES:
        for second in CHEAP_FAMILIES:
            if first < second:
                assert np.abs(outputs[first] - outputs[second]).mean() > 0.5, (first, second)


def test_trained_upsampler_is_trained_here_and_reduces_its_loss():
    import torch
    import torch.nn.functional as F

    from forensics.generators import _trained_upsampler

    untrained, trained = _trained_upsampler(steps=0, seed=3), _trained_upsampler(steps=60, seed=3)
    photo = photographs_for_split("train")[1][1][:64, :64]
    target = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        losses = [float(F.l1_loss(model(F.avg_pool2d(target, 2)), target)) for model in (untrained, trained)]
    assert losses[1] < losses[0]


def test_unknown_family_names_the_valid_ones(photo_crop):
    with pytest.raises(ValueError, match="supported families: .*pixel_shuffle"):
        generate(np.random.default_rng(0), photo_crop, "diffusion")


def test_post_processing_chain_resizes_adds_noise_and_encodes():
    image = np.full((40, 40, 3), 128, np.uint8)
    config = PostProcessing(noise_probability=1.0, codec_weights=(("webp", 1.0),))
    data, suffix, chain = post_process(np.random.default_rng(0), image, (30, 30), config)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "WEBP" and decoded.size == (30, 30) and suffix == ".webp"
    assert chain.startswith("resize 0.75 > noise ") and chain.split(" > ")[-1].startswith("webp ")
    quality = int(chain.split(" ")[-1])
    assert 60 <= quality <= 95


def test_photo_splits_are_disjoint_and_cover_every_photograph():
    names = {split: {name for name, _ in photographs_for_split(split)} for split in ("train", "calibration", "heldout")}
    assert names["heldout"] == set(HELD_OUT_PHOTOS) and names["calibration"] == set(CALIBRATION_PHOTOS)
    assert not names["train"] & names["calibration"] and not names["train"] & names["heldout"]
    assert not names["calibration"] & names["heldout"]
    assert set().union(*names.values()) == {name for name, _ in photographs_for_split("all")}


def test_real_fake_dataset_records_families_and_chains(tmp_path):
    families = ("nearest_decoder", "pixel_shuffle")
    counts = write_real_fake_dataset(tmp_path, 8, seed=4, size=40, max_size=56, split="calibration", families=families)
    assert counts == {"real": 4, "fake": 4, "nearest_decoder": 2, "pixel_shuffle": 2}
    rows = list(csv.DictReader(open(tmp_path / SAMPLES_FILE)))
    assert len(rows) == 8 and {row["photo"] for row in rows} <= set(CALIBRATION_PHOTOS)
    assert {row["family"] for row in rows if row["label"] == "real"} == {"real"}
    for row in rows:
        image = Image.open(tmp_path / row["file"])
        assert 40 <= image.width <= 56 and image.width == image.height
        assert row["chain"].split(" > ")[-1].split(" ")[0] in ("jpeg", "webp", "png")
        assert image.format == {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[row["chain"].split(" > ")[-1].split(" ")[0]]
    samples = find_labelled_images(tmp_path)
    by_file = {s.uri.split(str(tmp_path) + "/")[1]: s for s in samples}
    for row in rows:
        assert by_file[row["file"]].family == row["family"]
        assert by_file[row["file"]].label == (FAKE if row["label"] == "fake" else REAL)
    assert fingerprint_samples(samples)["fake_families"] == {"nearest_decoder": 2, "pixel_shuffle": 2}


def test_leaving_a_family_out_drops_only_its_fakes(tmp_path):
    write_real_fake_dataset(tmp_path, 8, seed=5, size=40, families=("bilinear_decoder", "transposed_conv"))
    samples = find_labelled_images(tmp_path)
    kept = without_families(samples, ["transposed_conv"])
    assert sum(s.label == REAL for s in kept) == 4
    assert {s.family for s in kept if s.label == FAKE} == {"bilinear_decoder"}
    with pytest.raises(DatasetError, match="not in this dataset"):
        without_families(samples, ["random_conv_decoder"])


def test_make_dataset_records_the_command_that_wrote_it(tmp_path, monkeypatch):
    import json
    import sys

    from jobs import cli

    output = tmp_path / "rf"
    monkeypatch.setattr(sys, "argv", ["forgescan", "make-dataset", "real-fake", "--output", str(output), "--count", "4",
                                      "--size", "40", "--family", "bilinear_decoder"])
    assert cli.main() == 0
    record = json.loads((output / "dataset.json").read_text())
    assert record["command"] == f"forgescan make-dataset real-fake --output {output} --count 4 --size 40 --family bilinear_decoder"
    assert record["bilinear_decoder"] == 2


def _sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: how much fine detail it holds."""
    import cv2

    return float(cv2.Laplacian(image.mean(axis=2).astype(np.float32), cv2.CV_32F).var())


def test_each_capture_condition_changes_the_crop_as_a_camera_would_and_says_so(photo_crop):
    seen = {}
    for seed in range(200):
        shot, step = capture(np.random.default_rng(seed), photo_crop, CaptureConditions(probability=1.0))
        seen.setdefault(step.split(" ")[1], (shot, step))
        if len(seen) == len(CAPTURE_CONDITIONS):
            break
    assert set(seen) == set(CAPTURE_CONDITIONS)
    for condition, (shot, step) in seen.items():
        assert shot.shape == photo_crop.shape and shot.dtype == np.uint8 and step.startswith(f"capture {condition} ")
        assert 0.2 < np.abs(shot.astype(float) - photo_crop).mean() < 40  # the same scene, shot differently
    for softer in ("lens_defocus", "shallow_depth_of_field", "camera_shake"):
        assert _sharpness(seen[softer][0]) < _sharpness(photo_crop)
    assert _sharpness(seen["sharpening"][0]) > _sharpness(photo_crop)


def test_noise_reduction_takes_the_grain_off_a_flat_patch():
    grainy = (np.full((48, 48, 3), 120.0) + np.random.default_rng(0).normal(0, 6, (48, 48, 3))).round().astype(np.uint8)
    for seed in range(200):
        shot, step = capture(np.random.default_rng(seed), grainy, CaptureConditions(probability=1.0))
        if step.startswith("capture noise_reduction "):
            break
    assert step.startswith("capture noise_reduction ")
    assert shot.std() < grainy.std() / 2


def test_capture_conditions_are_off_unless_asked_and_then_shoot_real_and_generated_crops_alike(tmp_path):
    untouched = np.random.default_rng(3)
    assert capture(untouched, np.zeros((8, 8, 3), np.uint8)) == (pytest.approx(np.zeros((8, 8, 3))), "")
    assert untouched.random() == np.random.default_rng(3).random()  # no draw taken: older datasets keep their bytes
    write_real_fake_dataset(tmp_path / "plain", 6, seed=4, size=40, families=("bilinear_decoder",))
    assert not any("capture" in row["chain"] for row in csv.DictReader(open(tmp_path / "plain" / SAMPLES_FILE)))
    write_real_fake_dataset(tmp_path / "shot", 6, seed=4, size=40, families=("bilinear_decoder",),
                            capture_conditions=CaptureConditions(probability=1.0))
    rows = list(csv.DictReader(open(tmp_path / "shot" / SAMPLES_FILE)))
    assert {row["label"] for row in rows} == {"real", "fake"}
    assert all(row["chain"].startswith("capture ") for row in rows)


@pytest.mark.parametrize("arguments, message", [
    (["real-fake", "--capture-conditions", "1.5"], "share between 0 and 1"),
    (["forgery", "--capture-conditions", "0.5"], "for `real-fake` and `manipulations` datasets"),
    (["real-fake", "--capture-condition", "tone_curve"], "give P too"),
])
def test_make_dataset_refuses_capture_conditions_it_cannot_apply(tmp_path, monkeypatch, capsys, arguments, message):
    import sys

    from jobs import cli

    monkeypatch.setattr(sys, "argv", ["forgescan", "make-dataset", arguments[0], "--output", str(tmp_path / "out"), *arguments[1:]])
    assert cli.main() == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_tone_curve_is_drawn_only_where_a_dataset_names_it(photo_crop):
    named = CaptureConditions(probability=1.0, conditions=EXTRA_CAPTURE_CONDITIONS)
    toned, step = capture(np.random.default_rng(0), photo_crop, named)
    assert step.startswith("capture tone_curve ") and toned.shape == photo_crop.shape
    assert abs(toned.astype(float).mean() - photo_crop.mean()) > 1  # brightness moved, the scene did not
    default_steps = {capture(np.random.default_rng(seed), photo_crop, CaptureConditions(probability=1.0))[1].split(" ")[1]
                     for seed in range(60)}
    assert default_steps == set(CAPTURE_CONDITIONS)
    with pytest.raises(ValueError, match="supported conditions"):
        CaptureConditions(conditions=("film_grain",))
