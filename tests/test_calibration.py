"""Temperature scaling and thresholds, and the calibrate / evaluate jobs that write them into cards."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from forensics.calibration import (binary_nll, fit_temperature, pixel_threshold, sigmoid, threshold_at_fpr,
                                   threshold_for_best_f1)
from forensics.checkpoint import read_card, save_checkpoint
from forensics.model_card import default_classifier_card, default_segmenter_card
from forensics.models import build_model
from forensics.synthetic import write_forgery_dataset, write_real_fake_dataset


def _overconfident_set(seed=0, count=4000, scale=4.0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2, count)
    labels = (rng.random(count) < sigmoid(true_logits)).astype(int)
    return true_logits * scale, labels


def test_temperature_recovers_the_overconfidence_and_lowers_nll():
    logits, labels = _overconfident_set(scale=4.0)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4.0, rel=0.15)
    assert binary_nll(logits, labels, temperature) < binary_nll(logits, labels, 1.0) - 0.05


def test_temperature_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.array([1.0, 2.0]), np.array([1, 1]))


def test_threshold_at_fpr_keeps_the_false_positive_rate_at_or_below_target():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.random(200) * 0.7, 0.3 + rng.random(200) * 0.7])
    labels = np.array([0] * 200 + [1] * 200)
    for target in (0.0, 0.01, 0.05, 0.2):
        threshold = threshold_at_fpr(scores, labels, target)
        false_positive_rate = np.mean(scores[labels == 0] >= threshold)
        assert false_positive_rate <= target
        assert np.mean(scores[labels == 0] >= np.nextafter(threshold, -1) - 1e-9) > target or target == 0.0 or threshold <= 0


def test_threshold_for_best_f1_picks_the_separating_cut():
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert 0.3 < threshold_for_best_f1(scores, np.array([0, 0, 0, 1, 1])) <= 0.8


def _pixels_whose_best_f1_threshold_marks_authentic_images():
    """Manipulated pixels score 0.3-1, the rest of manipulated images below 0.3; 3 % of authentic images' pixels
    score 0.3-0.7 (textures a segmenter mistakes), so the best-F1 cut (0.3) marks 3 % of authentic pixels."""
    rng = np.random.default_rng(0)
    manipulated = rng.uniform(0.3, 1.0, 1000)
    background = rng.uniform(0.0, 0.3, 3000)
    authentic = np.where(rng.random(6000) < 0.03, rng.uniform(0.3, 0.7, 6000), rng.uniform(0.0, 0.3, 6000))
    scores = np.concatenate([manipulated, background, authentic])
    labels = np.concatenate([np.ones(1000), np.zeros(9000)]).astype(bool)
    from_authentic_images = np.concatenate([np.zeros(4000), np.ones(6000)]).astype(bool)
    return scores, labels, from_authentic_images


def test_pixel_threshold_is_the_best_f1_among_thresholds_that_keep_authentic_pixels_under_the_target():
    scores, labels, authentic = _pixels_whose_best_f1_threshold_marks_authentic_images()
    best_f1_threshold = threshold_for_best_f1(scores, labels)
    assert np.mean(scores[authentic] >= best_f1_threshold) > 0.01  # best F1 alone marks too much of authentic images
    chosen, report = pixel_threshold(scores, labels, authentic, target_pixel_fpr=0.01)
    assert chosen > best_f1_threshold
    assert np.mean(scores[authentic] >= chosen) <= 0.01 and report["authentic_pixels_marked"] <= 0.01
    assert np.mean(scores[authentic] >= chosen - 0.05) > 0.01  # the lowest candidate that keeps to the target
    assert report["best_f1_threshold"] == best_f1_threshold and report["pixel_f1"] <= report["best_f1"]


def test_pixel_threshold_is_the_best_f1_one_without_authentic_images_or_with_target_one():
    scores, labels, authentic = _pixels_whose_best_f1_threshold_marks_authentic_images()
    best_f1_threshold = threshold_for_best_f1(scores, labels)
    assert pixel_threshold(scores, labels, np.zeros_like(authentic), 0.01)[0] == best_f1_threshold
    assert pixel_threshold(scores, labels, authentic, 1.0)[0] == best_f1_threshold


def test_training_fits_the_pixel_threshold_by_the_same_rule_as_calibrate():
    from forensics.training import calibrate_card

    scores, labels, authentic = _pixels_whose_best_f1_threshold_marks_authentic_images()
    logits = np.log(scores / (1 - scores)).astype(np.float32)
    rng = np.random.default_rng(1)
    validation = {"logits": logits, "labels": labels.astype(np.float32), "from_authentic": authentic,
                  "top_logits": rng.normal(0, 1, (20, 4)).astype(np.float32), "has_mask": np.arange(20) % 2 == 0}
    card = default_segmenter_card((64, 64))
    trained = calibrate_card(card, validation, target_fpr=0.05, target_pixel_fpr=0.01)
    expected, _ = pixel_threshold(sigmoid(logits, trained.temperature), labels, authentic, 0.01)
    assert trained.thresholds["pixel"] == expected
    best_f1_alone = calibrate_card(card, validation, target_fpr=0.05, target_pixel_fpr=1.0)
    assert best_f1_alone.thresholds["pixel"] < trained.thresholds["pixel"]


def _run_job(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("calibration")
    classifier = default_classifier_card((64, 64)).replace(version="test-classifier")
    segmenter = default_segmenter_card((64, 64)).replace(version="test-segmenter")
    write_real_fake_dataset(folder / "realfake", 10, seed=7, size=64)
    write_forgery_dataset(folder / "forgery", 8, seed=8, size=64, authentic_fraction=0.4)
    return {
        "classifier": save_checkpoint(build_model(classifier), classifier, folder / "classifier.safetensors", half=True),
        "segmenter": save_checkpoint(build_model(segmenter), segmenter, folder / "segmenter.safetensors"),
        "folder": folder,
    }


def test_calibrate_job_writes_temperature_thresholds_and_its_code_version_into_the_card(random_checkpoints, tmp_path):
    from forensics import code_version
    from jobs import calibrate

    folder = random_checkpoints["folder"]
    target = tmp_path / "calibrated.safetensors"
    assert _run_job(calibrate, ["classifier", "--checkpoint", str(random_checkpoints["classifier"]), "--data",
                                str(folder / "realfake"), "--target-fpr", "0.1", "--output-checkpoint", str(target)]) == 0
    card = read_card(target)
    assert card.temperature == card.metrics["calibration"]["temperature"] and "ai_generated" in card.thresholds
    assert card.metrics["calibration"]["nll_after"] <= card.metrics["calibration"]["nll_before"] + 1e-9
    assert card.metrics["calibration"]["code_version"] == code_version()  # the code the calibration ran at
    assert card.notes.endswith(f"Calibration: temperature and thresholds refitted on `{folder / 'realfake'}` by `forgescan calibrate`.")
    from safetensors import safe_open

    with safe_open(str(target), framework="pt") as handle:  # the header copy agrees with the JSON
        assert json.loads(handle.metadata()["forgescan_card"])["temperature"] == card.temperature
    assert read_card(random_checkpoints["classifier"]).temperature == 1.0  # the original is untouched


def test_calibrate_segmenter_sets_pixel_and_manipulated_thresholds(random_checkpoints, tmp_path):
    from jobs import calibrate

    target = tmp_path / "segmenter.safetensors"
    assert _run_job(calibrate, ["segmenter", "--checkpoint", str(random_checkpoints["segmenter"]), "--data",
                                str(random_checkpoints["folder"] / "forgery"), "--output-checkpoint", str(target)]) == 0
    card = read_card(target)
    assert {"pixel", "manipulated"} <= set(card.thresholds) and "calibration" in card.metrics
    rule = card.metrics["calibration"]["pixel_threshold"]  # the forgery set has authentic images: the target applies
    assert rule["target_pixel_fpr"] == 0.01 and (rule["authentic_pixels_marked"] <= 0.01 or card.thresholds["pixel"] == 0.95)


def test_evaluate_job_writes_metrics_and_pictures(random_checkpoints, tmp_path):
    from jobs import evaluate

    folder = random_checkpoints["folder"]
    classifier = str(random_checkpoints["classifier"])
    assert _run_job(evaluate, ["classifier", "--checkpoint", classifier, "--checkpoint", classifier,
                               "--data", str(folder / "realfake"), "--output", str(tmp_path / "c")]) == 0
    summary = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert {"accuracy", "f1", "roc_auc", "confusion_matrix"} <= set(summary["ensemble"])
    assert (tmp_path / "c" / "roc_curve.png").exists() and (tmp_path / "c" / "confusion_matrix.png").exists()
    assert _run_job(evaluate, ["segmenter", "--checkpoint", str(random_checkpoints["segmenter"]),
                               "--data", str(folder / "forgery"), "--output", str(tmp_path / "s")]) == 0
    summary = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert {"pixel_f1", "pixel_iou", "all_one_mask_f1"} <= set(summary["pixel"])
    assert (tmp_path / "s" / "mask_examples.png").exists() and (tmp_path / "s" / "pixel_threshold_curve.png").exists()
    curve = summary["pixel_threshold_curve"]["rows"]  # the forgery set has authentic images: both figures per threshold
    assert len(curve) == 19 and all(0 <= row["pixel_f1"] <= 1 and 0 <= row["authentic_pixels_marked"] <= 1 for row in curve)
    marked = [row["authentic_pixels_marked"] for row in curve]
    assert marked == sorted(marked, reverse=True)  # a higher threshold never marks more


def test_calibrate_refuses_a_checkpoint_of_the_other_kind(random_checkpoints, capsys):
    from jobs import calibrate

    assert _run_job(calibrate, ["segmenter", "--checkpoint", str(random_checkpoints["classifier"]),
                                "--data", str(random_checkpoints["folder"] / "forgery")]) == 2
    assert "--classifier" in capsys.readouterr().err


def test_calibrate_segmenter_fits_on_the_two_scale_maps_and_writes_the_coarse_pass_into_the_card(random_checkpoints, tmp_path):
    from forensics.checkpoint import load_checkpoint
    from jobs import calibrate

    model, card = load_checkpoint(random_checkpoints["segmenter"])
    native = save_checkpoint(model, card.replace(resize_mode="native_tiles", tile_overlap=16), tmp_path / "native.safetensors")
    data = str(random_checkpoints["folder"] / "forgery")  # 64 px images: a 48 px coarse pass applies to each
    fitted = {}
    for coarse in ("0", "48"):
        target = tmp_path / f"coarse{coarse}.safetensors"
        assert _run_job(calibrate, ["segmenter", "--checkpoint", str(native), "--data", data, "--coarse-short-side", coarse,
                                    "--output-checkpoint", str(target)]) == 0
        fitted[coarse] = read_card(target)
    assert fitted["48"].coarse_short_side == 48 and fitted["0"].coarse_short_side == 0
    before = {coarse: card.metrics["calibration"]["pixel_nll_before"] for coarse, card in fitted.items()}
    assert before["48"] != pytest.approx(before["0"], abs=1e-6)  # fitted on different maps


def test_calibrate_and_train_refuse_a_target_pixel_fpr_outside_zero_to_one_before_reading_data(random_checkpoints, tmp_path, capsys):
    from jobs import calibrate, train

    assert _run_job(calibrate, ["segmenter", "--checkpoint", str(random_checkpoints["segmenter"]), "--data",
                                str(tmp_path / "missing"), "--target-pixel-fpr", "5"]) == 2
    assert "--target-pixel-fpr is a share of pixels in [0, 1]" in capsys.readouterr().err  # not the missing data
    assert _run_job(train, ["segmenter", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "out"),
                            "--target-pixel-fpr", "-0.1"]) == 2
    assert "--target-pixel-fpr is a share of pixels in [0, 1]" in capsys.readouterr().err


def test_calibrate_segmenter_fits_on_mirrored_maps_and_writes_mirror_views_into_the_card(random_checkpoints, tmp_path):
    from jobs import calibrate

    data = str(random_checkpoints["folder"] / "forgery")
    fitted = {}
    for views in ("1", "4"):
        target = tmp_path / f"mirrors{views}.safetensors"
        assert _run_job(calibrate, ["segmenter", "--checkpoint", str(random_checkpoints["segmenter"]), "--data", data,
                                    "--mirror-views", views, "--output-checkpoint", str(target)]) == 0
        fitted[views] = read_card(target)
    assert fitted["4"].mirror_views == 4 and fitted["1"].mirror_views == 1
    before = {views: card.metrics["calibration"]["pixel_nll_before"] for views, card in fitted.items()}
    assert before["4"] != pytest.approx(before["1"], abs=1e-6)  # fitted on different maps


def test_calibrate_refuses_mirror_views_for_the_classifier(random_checkpoints, capsys):
    from jobs import calibrate

    assert _run_job(calibrate, ["classifier", "--checkpoint", str(random_checkpoints["classifier"]),
                                "--data", str(random_checkpoints["folder"] / "realfake"), "--mirror-views", "2"]) == 2
    assert "--mirror-views is a segmenter setting" in capsys.readouterr().err


def test_calibrate_refuses_a_coarse_pass_for_the_classifier_and_for_a_thumbnail_segmenter(random_checkpoints, capsys):
    from jobs import calibrate

    folder = random_checkpoints["folder"]
    assert _run_job(calibrate, ["classifier", "--checkpoint", str(random_checkpoints["classifier"]),
                                "--data", str(folder / "realfake"), "--coarse-short-side", "48"]) == 2
    assert "--coarse-short-side is a segmenter setting" in capsys.readouterr().err
    assert _run_job(calibrate, ["segmenter", "--checkpoint", str(random_checkpoints["segmenter"]),
                                "--data", str(folder / "forgery"), "--coarse-short-side", "48"]) == 2
    error = capsys.readouterr().err
    assert "--coarse-short-side" in error and str(random_checkpoints["segmenter"]) in error and "`resize`" in error


def _raw_manipulation_scores(seed=0, count=3000):
    """Top-1% pixel means the way an over-confident segmenter gives them: authentic images score 0.9 too."""
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < 0.5
    logits = np.where(labels, rng.normal(4.5, 1.0, count), rng.normal(2.5, 1.0, count))
    return sigmoid(logits), labels


def test_platt_scaling_turns_raw_image_scores_into_probabilities():
    from forensics.calibration import expected_calibration_error, fit_platt, platt

    raw, labels = _raw_manipulation_scores()
    fitted = fit_platt(raw, labels)
    calibrated = platt(raw, fitted["slope"], fitted["intercept"])
    held_raw, held_labels = _raw_manipulation_scores(seed=1)
    held = platt(held_raw, fitted["slope"], fitted["intercept"])
    assert expected_calibration_error(held_raw, held_labels) > 0.2  # raw: authentic images at 0.9
    assert expected_calibration_error(held, held_labels) < 0.03
    assert calibrated.min() >= 0 and calibrated.max() <= 1


def test_expected_calibration_error_is_zero_for_perfect_and_large_for_overconfident_scores():
    from forensics.calibration import expected_calibration_error

    rng = np.random.default_rng(3)
    probabilities = rng.random(20000)
    labels = rng.random(20000) < probabilities  # outcomes drawn at exactly the stated probability
    assert expected_calibration_error(probabilities, labels) < 0.02
    overconfident = np.where(probabilities >= 0.5, 0.999, 0.001)
    assert expected_calibration_error(overconfident, labels) > 0.2


def test_confidence_is_the_calibrated_probability_of_the_stated_verdict():
    """With calibrated scores, the verdicts stated at confidence ~p are right about p of the time."""
    from forensics.verdict import AUTHENTIC, decide_verdict

    rng = np.random.default_rng(4)
    count = 20000
    ai = rng.random(count) * 0.5  # calibrated P(AI), below the threshold: never an AI verdict here
    manipulated = rng.random(count)  # calibrated P(manipulated)
    is_ai = rng.random(count) < ai
    is_manipulated = rng.random(count) < manipulated
    confidences, correct = [], []
    for p_ai, p_manipulated, truth_ai, truth_manipulated in zip(ai, manipulated, is_ai, is_manipulated):
        verdict = decide_verdict(float(p_ai), float(p_manipulated), 0.5, 0.5)
        confidences.append(verdict.confidence)
        correct.append(not truth_ai and not truth_manipulated if verdict.label == AUTHENTIC else bool(truth_manipulated))
    confidences, correct = np.array(confidences), np.array(correct)
    for low, high in [(0.25, 0.4), (0.4, 0.55), (0.55, 0.7), (0.7, 0.85), (0.85, 1.0)]:
        chosen = (confidences >= low) & (confidences < high)
        assert chosen.sum() > 500
        assert abs(confidences[chosen].mean() - correct[chosen].mean()) < 0.03
