"""Training inputs, splits, augmentation and the training loop (in-process and through Ray Train)."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forensics import code_version
from PIL import Image

from forensics.checkpoint import load_checkpoint, read_card
from forensics.model_card import default_classifier_card
from forensics.synthetic import write_forgery_dataset, write_real_fake_dataset
from forensics.training import (
    FAKE,
    REAL,
    AugmentConfig,
    DatasetError,
    TrainSettings,
    augment,
    find_image_mask_pairs,
    find_labelled_images,
    fingerprint_samples,
    holdout_split,
    load_mask,
    stratified_folds,
    train_model,
)
from forensics.training.datasets import read_sample_bytes


def _save_image(path, seed=0, size=(32, 32), format="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=format)
    return path


def _jpeg_bytes(seed=0):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


# --- labels and layouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("real_name, fake_name", [("Real", "Fake"), ("0_real", "1_fake"), ("real", "fake")])
def test_labels_come_from_folder_names_not_alphabetical_order(tmp_path, real_name, fake_name):
    # "Fake" sorts before "Real": an ImageFolder-style loader would call fakes class 0.
    _save_image(tmp_path / "Train" / real_name / "a.jpg", 1)
    _save_image(tmp_path / "Train" / fake_name / "nested" / "b.png", 2, format="PNG")
    labels = {s.uri.split("/")[-1]: s.label for s in find_labelled_images(tmp_path)}
    assert labels == {"a.jpg": REAL, "b.png": FAKE}


def test_folder_without_real_and_fake_names_the_fix(tmp_path):
    _save_image(tmp_path / "cats" / "a.jpg")
    with pytest.raises(DatasetError, match=r"real/.*fake/"):
        find_labelled_images(tmp_path)


def test_missing_dataset_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        find_labelled_images(tmp_path / "nowhere")


def test_openfake_style_parquet_reads_image_bytes_and_string_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": _jpeg_bytes(i), "path": f"ignored/{i}.jpg"} for i in range(4)]
    table = pa.table({"image": images, "label": ["real", "fake", "fake", "real"], "model": ["laion", "sd", "sd", "pexels"]})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet")
    samples = find_labelled_images(tmp_path)
    assert [s.label for s in samples] == [REAL, FAKE, FAKE, REAL]
    assert read_sample_bytes(samples[1]) == images[1]["bytes"]
    fingerprint = fingerprint_samples(samples)
    assert fingerprint["rows"] == 4 and fingerprint == fingerprint_samples(list(reversed(samples)))


def test_parquet_with_an_unknown_label_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [{"bytes": _jpeg_bytes(), "path": "x"}], "label": ["maybe"]}), tmp_path / "x.parquet")
    with pytest.raises(DatasetError, match=r"row 0 has label 'maybe'"):
        find_labelled_images(tmp_path / "x.parquet")


def test_masks_match_images_by_stem_are_thresholded_and_resized_nearest(tmp_path):
    _save_image(tmp_path / "img" / "17_coco.tif", size=(40, 20), format="TIFF")
    mask = np.zeros((10, 20), np.uint8)  # half the image size, like some DEFACTO probe masks
    mask[:, :10] = 200  # manipulated
    mask[:, 10:] = 100  # JPEG noise below the threshold
    (tmp_path / "probe_mask").mkdir()
    Image.fromarray(mask).save(tmp_path / "probe_mask" / "17_coco.jpg")
    pairs = find_image_mask_pairs(tmp_path / "img", tmp_path / "probe_mask")
    assert len(pairs) == 1 and pairs[0].mask_uri.endswith("17_coco.jpg")
    loaded = load_mask(pairs[0].mask_uri, (40, 20))
    assert loaded.shape == (20, 40)
    # JPEG smears the 200/100 edge by a pixel or two; away from it the halves are exact.
    assert loaded[:, :18].all() and not loaded[:, 22:].any()


def test_unmatched_masks_name_both_folders(tmp_path):
    _save_image(tmp_path / "images" / "a.jpg")
    _save_image(tmp_path / "masks" / "b.png", format="PNG")
    with pytest.raises(DatasetError, match="same file stem"):
        find_image_mask_pairs(tmp_path)


# --- splits and augmentation ---------------------------------------------------------------------------


def test_stratified_folds_keep_the_class_balance_and_cover_every_sample():
    labels = np.array([0] * 30 + [1] * 10)
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(np.concatenate([valid for _, valid in folds]).tolist()) == list(range(40))
    for train, valid in folds:
        assert labels[valid].sum() == 2 and len(valid) == 8 and not set(train) & set(valid)


def test_too_few_images_for_the_folds_says_how_to_fix():
    with pytest.raises(ValueError, match="lower --folds"):
        stratified_folds([0, 0, 0, 1, 1], 5)


def test_holdout_split_is_seeded_and_disjoint():
    train, valid = holdout_split(20, 0.25, seed=3)
    assert len(valid) == 5 and not set(train) & set(valid)
    assert np.array_equal(valid, holdout_split(20, 0.25, seed=3)[1])


def test_augmentation_moves_the_mask_with_the_image_and_ends_at_the_input_size():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :16] = 255
    mask = np.zeros((48, 64), bool)
    mask[:, :16] = True
    config = AugmentConfig(flip_probability=1.0, resize_probability=1.0, blur_probability=1.0, jpeg_probability=1.0)
    pixels, moved = augment(np.random.default_rng(0), Image.fromarray(image), (32, 32), config, mask=mask)
    assert pixels.shape == (32, 32, 3) and moved.shape == (32, 32)
    assert moved[:, -8:].all() and not moved[:, :16].any()  # flipped to the right-hand side
    assert pixels[:, -4:].mean() > 200 and pixels[:, :12].mean() < 50


# --- synthetic datasets --------------------------------------------------------------------------------


def test_synthetic_writers_produce_loadable_layouts_with_disjoint_photos(tmp_path):
    write_real_fake_dataset(tmp_path / "rf", 6, seed=1, size=48, split="train")
    write_forgery_dataset(tmp_path / "fg", 6, seed=2, size=48, split="heldout", authentic_fraction=0.5)
    samples = find_labelled_images(tmp_path / "rf")
    assert sorted(s.label for s in samples) == [0, 0, 0, 1, 1, 1]
    pairs = find_image_mask_pairs(tmp_path / "fg")
    assert len(pairs) == 6
    from forensics.synthetic import HELD_OUT_PHOTOS

    assert all(any(name in p.image_uri for name in HELD_OUT_PHOTOS) for p in pairs)
    assert not any(name in s.uri for s in samples for name in HELD_OUT_PHOTOS)
    spliced = [p for p in pairs if "spliced" in p.image_uri]
    assert spliced and all(load_mask(p.mask_uri, (48, 48)).any() for p in spliced)


# --- the training loop ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_datasets(tmp_path_factory):
    from jobs.make_dataset import write_dataset_record

    root = tmp_path_factory.mktemp("tiny_data")
    write_real_fake_dataset(root / "realfake", 12, seed=5, size=64)
    write_dataset_record(root / "realfake", "forgescan make-dataset real-fake --output realfake --count 12 --seed 5", {})
    write_forgery_dataset(root / "forgery", 10, seed=6, size=64, authentic_fraction=0.3)
    return root


def test_training_loop_returns_a_calibrated_trained_card(tiny_datasets):
    samples = find_labelled_images(tiny_datasets / "realfake")
    settings = TrainSettings(epochs=1, batch_size=4, threads=2, augment=AugmentConfig.none())
    result = train_model(default_classifier_card((64, 64)), samples[2:10], samples[:2] + samples[10:], settings)
    assert len(result.history) == 1 and {"train_loss", "valid_loss", "roc_auc"} <= set(result.history[0])
    assert result.card.metrics["best_epoch"] == 1
    assert "ai_generated" in result.card.thresholds and result.card.temperature > 0
    assert result.validation["logits"].shape == (4,)


def _train_args(**overrides):
    from jobs import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    argv = [overrides.pop("model")] + [item for key, value in overrides.items()
                                       for item in ([f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)]))]
    return parser.parse_args(argv)


def test_ray_train_classifier_writes_a_loadable_checkpoint_with_card_metrics_fingerprint_and_code_version(tiny_datasets, tmp_path, ray_local):
    from jobs import train

    args = _train_args(model="classifier", data=tiny_datasets / "realfake", output=tmp_path, folds=2, max_folds=1,
                       epochs=1, batch_size=4, input_size=64, threads=1, cpus_per_worker=1, exclude_family="pixel_shuffle")
    assert train.run(args) == 0
    model, card = load_checkpoint(tmp_path / "classifier.safetensors", expected_kind="classifier")
    assert card.trained and "untrained" not in card.version and card.input_size == (64, 64)
    assert card.training_data["sha256"] and card.training_data["real"] == 6 and card.training_data["fake"] == 5
    assert card.training_data["excluded_families"] == ["pixel_shuffle"]
    assert "pixel_shuffle" not in card.training_data["fake_families"] and len(card.training_data["fake_families"]) == 5
    assert "cross_validation" in card.metrics and "roc_auc" in card.metrics["cross_validation"]
    first, train_command = card.reproduce.split(" && ")
    assert first == "forgescan make-dataset real-fake --output realfake --count 12 --seed 5"
    assert train_command.startswith("forgescan train classifier") and "--exclude-family pixel_shuffle" in train_command
    assert "seconds" not in card.metrics["validation_at_best_epoch"]  # a timing would make the card irreproducible
    assert card.code_version and card.code_version == code_version()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["per_fold"][0]["confusion_matrix"] and "classification_report" in metrics["overall"]
    for picture in ("roc_curve.png", "confusion_matrix.png", "training_curves_fold_0.png"):
        assert (tmp_path / picture).stat().st_size > 0


def test_code_version_is_this_checkouts_commit():
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: the card records the installed package's version")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert code_version().removesuffix("-dirty") == head.stdout.strip()


def test_ray_train_segmenter_writes_loss_curves_and_pixel_metrics(tiny_datasets, tmp_path, ray_local):
    from jobs import train

    args = _train_args(model="segmenter", data=tiny_datasets / "forgery", output=tmp_path, valid_fraction=0.3,
                       epochs=1, batch_size=4, input_size=64, threads=1, cpus_per_worker=1, arch="FPN",
                       tile_overlap=8, max_tiles=50)
    assert train.run(args) == 0
    card = read_card(tmp_path / "segmenter.safetensors")
    assert card.architecture["arch"] == "FPN" and card.trained
    assert (card.resize_mode, card.tile_overlap, card.max_tiles) == ("native_tiles", 8, 50)  # native by default
    assert {"pixel", "manipulated"} <= set(card.thresholds)
    assert "pixel_f1" in card.metrics["validation_at_best_epoch"]
    assert (tmp_path / "training_curves.png").exists() and (tmp_path / "validation_curves.png").exists()


def test_train_job_reports_a_bad_dataset_without_a_traceback(tmp_path, capsys):
    from jobs import train

    (tmp_path / "empty").mkdir()
    args = _train_args(model="classifier", data=tmp_path / "empty", output=tmp_path / "out")
    assert train.run(args) == 2
    assert "real/" in capsys.readouterr().err


def test_center_crop_cards_train_on_native_pixels_and_validate_on_the_scanner_crop():
    from forensics.decode import center_crop

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8))
    original = np.asarray(image)
    pixels, _ = augment(rng, image, (32, 32), AugmentConfig.none(), resize_mode="center_crop")
    # a random 32x32 window of the original, pixel for pixel (no resampling)
    windows = [original[t : t + 32, l : l + 32] for t in range(49) for l in range(69)]
    assert any(np.array_equal(pixels, window) for window in windows)
    validation, _ = augment(rng, image, (32, 32), AugmentConfig.none(), resize_mode="center_crop", random_crop=False)
    assert np.array_equal(validation, center_crop(image, 32, 32))
    with pytest.raises(ValueError, match="segmenter"):
        augment(rng, image, (32, 32), AugmentConfig.none(), mask=np.zeros((80, 100), bool), resize_mode="center_crop")


def test_native_tile_segmenter_trains_on_a_native_window_with_its_mask():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    mask = np.zeros((90, 120), bool)
    mask[10:40, 70:110] = True
    pixels, window_mask = augment(rng, Image.fromarray(original), (32, 32), AugmentConfig.none(), mask=mask,
                                  resize_mode="native_tiles")
    matches = [(t, l) for t in range(59) for l in range(89) if np.array_equal(pixels, original[t : t + 32, l : l + 32])]
    assert len(matches) == 1  # a native window, pixel for pixel
    top, left = matches[0]
    assert np.array_equal(window_mask, mask[top : top + 32, left : left + 32])  # with the mask cut at the same place
    small = Image.fromarray(original[:20, :25])  # smaller than a tile: mirrored like the scan's edge tiles
    pixels, window_mask = augment(rng, small, (32, 32), AugmentConfig.none(), mask=mask[:20, :25], resize_mode="native_tiles")
    assert pixels.shape == (32, 32, 3) and np.array_equal(pixels[:20, :25], original[:20, :25])
    assert np.array_equal(window_mask[:20, :25], mask[:20, :25])


def test_training_windows_are_placed_over_a_small_edit_when_asked():
    rng = np.random.default_rng(1)
    original = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    mask = np.zeros((300, 400), np.uint8)
    mask[250:262, 10:22] = 3  # a small removed region in one corner: a random 32 px window rarely sees it
    always = AugmentConfig(flip_probability=0.0, resize_probability=0.0, blur_probability=0.0,
                           jpeg_probability=0.0, manipulated_window_probability=1.0)
    for _ in range(50):
        pixels, window_mask = augment(rng, Image.fromarray(original), (32, 32), always, mask=mask,
                                      resize_mode="native_tiles")
        assert pixels.shape == (32, 32, 3) and (window_mask == 3).any()
    random_hits = sum((augment(rng, Image.fromarray(original), (32, 32), AugmentConfig.none(), mask=mask,
                               resize_mode="native_tiles", random_crop=True)[1] == 3).any() for _ in range(50))
    assert random_hits < 25  # without it, most windows miss the edit
    authentic = np.zeros((300, 400), np.uint8)  # nothing to aim at: an ordinary random window
    _, window_mask = augment(rng, Image.fromarray(original), (32, 32), always, mask=authentic, resize_mode="native_tiles")
    assert window_mask.shape == (32, 32) and not window_mask.any()



def test_lite0_imagenet_weights_renamed_for_timm_start_the_classifier(tmp_path):
    from safetensors.torch import load_file

    import torch

    from forensics.models import build_model, load_backbone_weights
    from forensics.training.backbones import export_efficientnet_lite0

    path = export_efficientnet_lite0(tmp_path / "lite0-timm.safetensors", naming="timm")
    card = default_classifier_card((64, 64))
    model = build_model(card)
    loaded = load_backbone_weights(model, card, path)
    assert len(loaded) == 245 and not any(".se." in name or name.startswith("classifier") for name in loaded)
    assert torch.equal(model.state_dict()["conv_stem.weight"], load_file(str(path))["conv_stem.weight"])


def test_a_card_trained_on_exported_backbone_weights_reproduces_the_export_first(tmp_path, monkeypatch):
    from forensics.training.backbones import export_efficientnet_lite0, weights_command
    from jobs import train

    monkeypatch.chdir(tmp_path)
    export_efficientnet_lite0("weights/lite0.safetensors")
    assert weights_command("weights/lite0.safetensors") == "python -m forensics.training.backbones weights/lite0.safetensors"
    (tmp_path / "data").mkdir()
    args = _train_args(model="segmenter", data="data", output="run", backbone_weights="weights/lite0.safetensors")
    steps = train.reproduce_command(args).split(" && ")
    assert steps[0] == "python -m forensics.training.backbones weights/lite0.safetensors"
    assert steps[1].startswith("forgescan train segmenter") and "--backbone-weights weights/lite0.safetensors" in steps[1]
    assert len(steps) == 2


_CLEANER_LOGS = """
import logging, time, ray
from jobs.train import start_ray
start_ray("local")  # as `forgescan train` starts its private instance

@ray.remote(num_cpus=0)
class Cleaner:  # detached and started by another actor, as Ray Train's controller starts its cleaner
    def log(self):
        logger = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
        logger.warning("CLEANER-WARNING"); logger.error("CLEANER-ERROR")
        return True

@ray.remote(num_cpus=0)
class Controller:
    def run(self):
        return ray.get(Cleaner.options(lifetime="detached").remote().log.remote())

assert ray.get(Controller.remote().run.remote())
time.sleep(2)  # the workers' output reaches the driver
"""


def test_a_private_training_instance_prints_only_the_placement_group_cleaners_errors():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _CLEANER_LOGS], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "CLEANER-ERROR" in output and "CLEANER-WARNING" not in output


def test_a_ray_train_run_that_fails_in_a_worker_names_the_image_and_the_log_folder(tiny_datasets, tmp_path, ray_local, capsys):
    import shutil

    from jobs import train

    data = tmp_path / "forgery"
    shutil.copytree(tiny_datasets / "forgery", data)
    broken = sorted((data / "images").iterdir())[0]
    broken.write_bytes(b"not an image")  # found by the listing; only a worker's decode meets it
    args = _train_args(model="segmenter", data=data, output=tmp_path / "out", valid_fraction=0.3, epochs=1,
                       batch_size=4, input_size=64, threads=1, cpus_per_worker=1, tile_overlap=8, max_tiles=50)
    assert train.run(args) == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("forgescan train:")]
    assert len(ours) == 1  # one line: the root cause, not Ray's error snippet (the workers' own logs may follow)
    error = ours[0]
    assert "failed in a worker: Cannot decode image" in error and broken.name in error and "Remove or replace the file" in error
    assert str(tmp_path / "out" / "ray_results") in error and "rerun the same command" in error
