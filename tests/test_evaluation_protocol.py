"""The classifier evaluation protocol: calibration on a disjoint split, ECE and reliability, per-family and
leave-one-family-out tables, and a card whose `reproduce` holds every command that shaped it."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from forensics.checkpoint import read_card, save_checkpoint
from forensics.model_card import default_classifier_card
from forensics.models import build_model
from forensics.synthetic import write_real_fake_dataset

FAMILIES = ("bilinear_decoder", "pixel_shuffle")


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    import torch

    from jobs.make_dataset import write_dataset_record

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("protocol")
    for split, seed in (("heldout", 21), ("calibration", 22)):
        write_real_fake_dataset(folder / split, 8, seed=seed, size=64, max_size=80, split=split, families=FAMILIES)
        write_dataset_record(folder / split, f"forgescan make-dataset real-fake --output {folder / split} --split {split}", {})
    write_real_fake_dataset(folder / "heldout_again", 4, seed=23, size=64, split="heldout", families=FAMILIES)
    card = default_classifier_card((64, 64)).replace(version="tiny-all-families", reproduce="python -m jobs.train classifier")
    everything = save_checkpoint(build_model(card), card, folder / "all.safetensors")
    unseen = card.replace(version="tiny-without-pixel-shuffle", training_data={"excluded_families": ["pixel_shuffle"]},
                          reproduce="python -m jobs.train classifier --exclude-family pixel_shuffle")
    without = save_checkpoint(build_model(unseen), unseen, folder / "without_pixel_shuffle.safetensors")
    return {"folder": folder, "all": str(everything), "without": str(without)}


def test_calibrating_a_leave_one_family_out_classifier_leaves_out_its_family_fakes(protocol, tmp_path):
    from jobs import calibrate
    from tests.test_calibration import _run_job

    calibration = protocol["folder"] / "calibration"
    fitted = {}
    for name in ("all", "without"):
        target = tmp_path / f"{name}.safetensors"
        assert _run_job(calibrate, ["classifier", "--checkpoint", protocol[name], "--data", str(calibration),
                                    "--output-checkpoint", str(target)]) == 0
        fitted[name] = read_card(target).metrics["calibration"]["data_fingerprint"]
    assert fitted["without"]["real"] == fitted["all"]["real"]
    assert fitted["without"]["fake"] < fitted["all"]["fake"] and list(fitted["without"]["fake_families"]) == ["bilinear_decoder"]


def _evaluate(monkeypatch, argv: list[str]) -> int:
    from jobs import cli

    monkeypatch.setattr(sys, "argv", ["forgescan", "evaluate"] + argv)
    return cli.main(["evaluate"] + argv)


def test_leave_one_family_out_table_tests_each_model_on_the_family_it_never_saw(protocol, tmp_path, monkeypatch):
    folder = protocol["folder"]
    output = tmp_path / "eval"
    assert _evaluate(monkeypatch, ["classifier", "--checkpoint", protocol["all"], "--data", str(folder / "heldout"),
                                   "--calibration-data", str(folder / "calibration"), "--leave-one-out", protocol["without"],
                                   "--output", str(output)]) == 0
    summary = json.loads((output / "metrics.json").read_text())
    model = summary["models"][protocol["all"]]
    assert model["calibrated_on"] == str(folder / "calibration") and 0.0 <= model["expected_calibration_error"] <= 1.0
    assert [row["family"] for row in model["per_family"]] == sorted(FAMILIES)
    assert all(row["fakes"] == 2 and row["reals"] == 4 for row in model["per_family"])
    (row,) = summary["leave_one_family_out"]
    assert row["family"] == "pixel_shuffle" and row["fakes"] == 2 and row["reals"] == 4
    assert row["calibrated_on"] == str(folder / "calibration")
    assert row["all_family_model"]["roc_auc"] == next(r["roc_auc"] for r in model["per_family"] if r["family"] == "pixel_shuffle")
    report = (output / "report.md").read_text()
    assert "| pixel_shuffle | 2 |" in report and "Leave one family out" in report
    assert (output / "reliability_diagram.png").stat().st_size > 1000


def test_calibration_on_the_test_photographs_is_refused(protocol, tmp_path, monkeypatch, capsys):
    folder = protocol["folder"]
    assert _evaluate(monkeypatch, ["classifier", "--checkpoint", protocol["all"], "--data", str(folder / "heldout"),
                                   "--calibration-data", str(folder / "heldout_again"), "--output", str(tmp_path)]) == 2
    assert "same photographs" in capsys.readouterr().err
    assert _evaluate(monkeypatch, ["classifier", "--checkpoint", protocol["all"], "--data", str(folder / "heldout"),
                                   "--calibration-data", str(folder / "heldout"), "--output", str(tmp_path)]) == 2
    assert "shares 8 images" in capsys.readouterr().err


def test_leave_one_out_checkpoint_must_name_its_family(protocol, tmp_path, monkeypatch, capsys):
    folder = protocol["folder"]
    assert _evaluate(monkeypatch, ["classifier", "--checkpoint", protocol["all"], "--data", str(folder / "heldout"),
                                   "--leave-one-out", protocol["all"], "--output", str(tmp_path)]) == 2
    assert "--exclude-family" in capsys.readouterr().err


def test_calibrated_and_evaluated_card_reproduces_its_whole_chain_and_records_the_code_each_step_ran_at(
        protocol, tmp_path, monkeypatch):
    from forensics import code_version
    from jobs import cli

    folder = protocol["folder"]
    checkpoint = tmp_path / "classifier.safetensors"
    calibrate = ["calibrate", "classifier", "--checkpoint", protocol["all"], "--data", str(folder / "calibration"),
                 "--output-checkpoint", str(checkpoint)]
    monkeypatch.setattr(sys, "argv", ["forgescan"] + calibrate)
    assert cli.main(calibrate) == 0
    calibrated = read_card(checkpoint)
    assert calibrated.metrics["calibration"]["code_version"] == code_version()
    argv = ["classifier", "--checkpoint", str(checkpoint), "--data", str(folder / "heldout"), "--calibration-data",
            str(folder / "calibration"), "--output", str(tmp_path / "eval"), "--record-in-card"]
    assert _evaluate(monkeypatch, argv) == 0
    card = read_card(checkpoint)
    assert card.reproduce.split(" && ") == [
        "python -m jobs.train classifier",
        f"forgescan make-dataset real-fake --output {folder / 'calibration'} --split calibration",
        "forgescan " + " ".join(calibrate),
        f"forgescan make-dataset real-fake --output {folder / 'heldout'} --split heldout",
        "forgescan evaluate " + " ".join(argv),
    ]
    evaluation = card.metrics["evaluation"]
    assert evaluation["calibration_data"] == str(folder / "calibration") and "expected_calibration_error" in evaluation
    assert evaluation["code_version"] == code_version()  # the code the evaluation ran at
    # calibrated on exactly this split already: the card's temperature and threshold are the ones evaluated
    assert evaluation["temperature"] == calibrated.temperature and evaluation["threshold"] == calibrated.threshold("ai_generated")
    assert _evaluate(monkeypatch, argv) == 0  # recording the same evaluation again does not repeat it
    assert read_card(checkpoint).reproduce == card.reproduce
    with_leave_one_out = argv + ["--leave-one-out", protocol["without"]]
    assert _evaluate(monkeypatch, with_leave_one_out) == 0  # a newer evaluation replaces the recorded one
    steps = read_card(checkpoint).reproduce.split(" && ")
    assert steps[:-1] == card.reproduce.split(" && ")[:-1] + [read_card(protocol["without"]).reproduce]
    assert steps[-1] == "forgescan evaluate " + " ".join(with_leave_one_out)
    assert read_card(checkpoint).metrics["evaluation"]["leave_one_family_out"][0]["family"] == "pixel_shuffle"


def test_leave_one_out_recipe_joins_the_chain_with_each_step_before_the_steps_that_read_what_it_makes():
    from jobs.evaluate import merged_steps

    export = "python -m forensics.training.backbones weights.safetensors"
    # a card trained before training recorded the weights export, and a leave-one-out card trained after
    shipped = ["make photographs", "make train", "train --backbone-weights weights.safetensors", "make calibration",
               "calibrate", "make heldout"]
    without_splice = [export, "make photographs", "make train", "train --exclude-family splice --backbone-weights weights.safetensors"]
    assert merged_steps(shipped, without_splice) == [export, *shipped, without_splice[-1]]
    assert merged_steps(shipped, shipped[:2]) == shipped  # nothing new: unchanged
    # each chain keeps its own order whatever it shares
    assert merged_steps(["a", "c"], ["a", "b", "c", "d"]) == ["a", "b", "c", "d"]


def test_reliability_bins_follow_the_observed_rate():
    from forensics.metrics import reliability_bins

    rng = np.random.default_rng(0)
    probabilities = rng.random(20000)
    labels = rng.random(20000) < probabilities  # calibrated by construction
    for row in reliability_bins(probabilities, labels):
        assert abs(row["positive_rate"] - row["mean_probability"]) < 0.03
    overconfident = reliability_bins(np.where(labels, 0.99, 0.95), labels)
    assert overconfident[-1]["mean_probability"] > overconfident[-1]["positive_rate"] + 0.3


# --- the segmenter protocol: per manipulation family and leave-one-family-out ------------------------------


def test_segmenter_family_figures_pool_the_pixels_and_rank_the_images_of_each_family():
    from forensics.metrics import PixelCounts
    from forensics.training.evaluation import SegmenterOutputs, segmenter_family_metrics

    def counts(true_positive, false_positive, false_negative):
        return PixelCounts(true_positive, false_positive, false_negative, 100 - true_positive - false_positive - false_negative, 0, 100)

    outputs = SegmenterOutputs(image_counts=[counts(0, 5, 0), counts(0, 0, 0), counts(10, 0, 10), counts(2, 4, 6), counts(8, 8, 0)])
    families = [(), (), ("splice",), ("splice", "retouch"), ("removal",)]
    scores = np.array([0.2, 0.6, 0.9, 0.5, 0.7])
    rows = {row["family"]: row for row in segmenter_family_metrics(outputs, families, scores, threshold=0.55)}
    assert sorted(rows) == ["removal", "retouch", "splice"]
    splice = rows["splice"]
    assert splice["images"] == 2 and splice["authentic_images"] == 2
    assert splice["pixel_f1"] == pytest.approx(2 * 12 / (2 * 12 + 4 + 16))  # the two splice images' pixels pooled
    assert splice["roc_auc"] == pytest.approx(0.75)  # 0.9 beats both authentic scores, 0.5 beats one of two
    assert splice["detection_rate"] == pytest.approx(0.5)
    assert splice["authentic_false_positive_rate"] == pytest.approx(0.5)  # 0.6 of the authentic 0.2 and 0.6 passes 0.55
    assert rows["removal"]["pixel_f1"] == pytest.approx(16 / 24) and rows["removal"]["roc_auc"] == pytest.approx(1.0)


def test_segmenter_figures_count_the_masks_a_scan_writes_nothing_marked_below_the_manipulated_threshold():
    from forensics.metrics import PixelCounts
    from forensics.training.evaluation import SegmenterOutputs

    def counts(true_positive, false_positive, false_negative, total=100):
        positive = true_positive + false_negative
        return PixelCounts(true_positive, false_positive, false_negative, total - positive - false_positive, positive, total)

    # An authentic image with a false mark, a splice found, a splice half-found; class 0 authentic, 1 spliced, 2 retouched.
    per_image = [counts(0, 5, 0), counts(10, 2, 0), counts(2, 3, 6)]
    confusion = [np.array([[95, 5, 0], [0, 0, 0], [0, 0, 0]]), np.array([[86, 2, 2], [0, 10, 0], [0, 0, 0]]),
                 np.array([[89, 3, 0], [6, 2, 0], [0, 0, 0]])]
    every_image = SegmenterOutputs(pixel_counts=sum(per_image, PixelCounts()), image_counts=per_image,
                                   class_confusion=sum(confusion), image_class_confusion=confusion)
    written = every_image.as_written(np.array([0.2, 0.9, 0.4]), manipulated_threshold=0.5)
    assert [c.true_positive for c in written.image_counts] == [0, 10, 0]
    assert [c.false_positive for c in written.image_counts] == [0, 2, 0]
    assert [c.false_negative for c in written.image_counts] == [0, 0, 8]  # the half-found splice is now all missed
    assert written.pixel_counts.f1 == pytest.approx(2 * 10 / (2 * 10 + 2 + 8))
    assert every_image.pixel_counts.f1 == pytest.approx(2 * 12 / (2 * 12 + 10 + 6))  # the maps themselves, unchanged
    assert written.class_confusion.tolist() == [[100 + 86 + 92, 2, 2], [8, 10, 0], [0, 0, 0]]
    assert written.class_confusion.sum() == every_image.class_confusion.sum()


@pytest.fixture(scope="module")
def manipulation_protocol(tmp_path_factory):
    import csv

    import torch

    from forensics.manipulations import write_manipulation_dataset
    from forensics.model_card import MANIPULATION_CLASSES, default_segmenter_card

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("manipulations")
    write_manipulation_dataset(folder / "heldout", 14, seed=5, size=64, split="heldout", authentic_fraction=0.3)
    rows = list(csv.DictReader(open(folder / "heldout" / "samples.csv")))
    card = default_segmenter_card((64, 64), classes=MANIPULATION_CLASSES).replace(version="tiny-all-families",
                                                                                  reproduce="python -m jobs.train segmenter")
    everything = save_checkpoint(build_model(card), card, folder / "all.safetensors")
    unseen = card.replace(version="tiny-without-splice", training_data={"excluded_families": ["splice"]},
                          reproduce="python -m jobs.train segmenter --exclude-family splice")
    without = save_checkpoint(build_model(unseen), unseen, folder / "without_splice.safetensors")
    return {"folder": folder, "rows": rows, "all": str(everything), "without": str(without)}


def test_segmenter_leave_one_family_out_tests_the_model_on_the_family_it_never_saw(manipulation_protocol, tmp_path, monkeypatch):
    folder, rows = manipulation_protocol["folder"], manipulation_protocol["rows"]
    authentic = sum(not row["families"] for row in rows)
    with_splice = sum("splice" in row["families"].split("+") for row in rows)
    assert authentic >= 1 and with_splice >= 1  # the fixture's seed gives both
    output = tmp_path / "eval"
    assert _evaluate(monkeypatch, ["segmenter", "--checkpoint", manipulation_protocol["all"], "--data", str(folder / "heldout"),
                                   "--leave-one-out", manipulation_protocol["without"], "--output", str(output)]) == 0
    summary = json.loads((output / "metrics.json").read_text())
    per_family = {row["family"]: row for row in summary["per_family"]}
    assert sorted(per_family) == sorted({f for row in rows for f in row["families"].split("+") if f})
    assert per_family["splice"]["images"] == with_splice and per_family["splice"]["authentic_images"] == authentic
    (row,) = summary["leave_one_family_out"]
    assert row["family"] == "splice" and row["images"] == with_splice and row["authentic_images"] == authentic
    assert row["version"] == "tiny-without-splice"
    assert row["all_family_model"]["pixel_f1"] == per_family["splice"]["pixel_f1"]
    report = (output / "report.md").read_text()
    assert "Leave one family out" in report and f"| splice | {with_splice} |" in report


def test_segmenter_leave_one_out_needs_a_dataset_that_names_its_families(manipulation_protocol, tmp_path, monkeypatch, capsys):
    folder = manipulation_protocol["folder"]
    copy = tmp_path / "no_samples"
    shutil.copytree(folder / "heldout", copy)
    (copy / "samples.csv").unlink()
    assert _evaluate(monkeypatch, ["segmenter", "--checkpoint", manipulation_protocol["all"], "--data", str(copy),
                                   "--leave-one-out", manipulation_protocol["without"], "--output", str(tmp_path / "e")]) == 2
    assert "samples.csv" in capsys.readouterr().err
    assert _evaluate(monkeypatch, ["segmenter", "--checkpoint", manipulation_protocol["all"], "--data", str(copy),
                                   "--output", str(tmp_path / "e")]) == 0  # without --leave-one-out, no family table


def test_train_segmenter_without_a_family_leaves_out_every_image_carrying_it(manipulation_protocol, tmp_path):
    from tests.test_training import _train_args
    from jobs import train

    folder, rows = manipulation_protocol["folder"], manipulation_protocol["rows"]
    with_splice = sum("splice" in row["families"].split("+") for row in rows)
    args = _train_args(model="segmenter", data=folder / "heldout", output=tmp_path, valid_fraction=0.25, epochs=1,
                       batch_size=4, input_size=64, threads=1, num_workers=0, no_augment=True,
                       classes="authentic,spliced,copy_moved,removed,retouched,generated", exclude_family="splice")
    assert train.run(args) == 0
    card = read_card(tmp_path / "segmenter.safetensors")
    assert card.training_data["excluded_families"] == ["splice"] and "--exclude-family splice" in card.reproduce
    assert card.training_data["train_pairs"] + card.training_data["valid_pairs"] == len(rows) - with_splice
    unknown = _train_args(model="segmenter", data=folder / "heldout", output=tmp_path / "bad", num_workers=0,
                          classes="authentic,spliced,copy_moved,removed,retouched,generated", exclude_family="warp")
    assert train.run(unknown) == 2


def test_a_recorded_segmenter_evaluation_keeps_its_family_tables_and_the_left_out_run_in_the_card(manipulation_protocol, tmp_path, monkeypatch):
    folder = manipulation_protocol["folder"]
    checkpoint = tmp_path / "segmenter.safetensors"
    shutil.copy(manipulation_protocol["all"], checkpoint)
    argv = ["segmenter", "--checkpoint", str(checkpoint), "--data", str(folder / "heldout"), "--leave-one-out",
            manipulation_protocol["without"], "--output", str(tmp_path / "eval"), "--record-in-card"]
    assert _evaluate(monkeypatch, argv) == 0
    card = read_card(checkpoint)
    evaluation = card.metrics["evaluation"]
    assert {row["family"] for row in evaluation["per_family"]} >= {"splice"}
    assert evaluation["leave_one_family_out"][0]["family"] == "splice"
    assert card.reproduce.split(" && ")[-2:] == ["python -m jobs.train segmenter --exclude-family splice",
                                                 "forgescan evaluate " + " ".join(argv)]


def test_calibrating_a_leave_one_family_out_segmenter_leaves_its_family_out_of_the_calibration_data(manipulation_protocol, tmp_path, capsys):
    from forensics.checkpoint import load_checkpoint
    from jobs import calibrate
    from tests.test_calibration import _run_job

    folder, rows = manipulation_protocol["folder"], manipulation_protocol["rows"]
    with_splice = sum("splice" in row["families"].split("+") for row in rows)
    fitted = {}
    for name in ("all", "without"):
        target = tmp_path / f"{name}.safetensors"
        assert _run_job(calibrate, ["segmenter", "--checkpoint", manipulation_protocol[name], "--data", str(folder / "heldout"),
                                    "--output-checkpoint", str(target)]) == 0
        fitted[name] = read_card(target).metrics["calibration"]
    assert fitted["all"]["data_fingerprint"]["files"] == 2 * len(rows) and "excluded_families" not in fitted["all"]
    assert fitted["without"]["excluded_families"] == ["splice"]
    assert fitted["without"]["data_fingerprint"]["files"] == 2 * (len(rows) - with_splice)  # an image and its mask each
    assert "trained without ['splice']" in capsys.readouterr().err
    model, card = load_checkpoint(manipulation_protocol["without"])
    elsewhere = save_checkpoint(model, card.replace(training_data={"excluded_families": ["warp"]}), tmp_path / "warp.safetensors")
    assert _run_job(calibrate, ["segmenter", "--checkpoint", str(elsewhere), "--data", str(folder / "heldout"),
                                "--output-checkpoint", str(tmp_path / "warp_calibrated.safetensors")]) == 0
    calibrated = read_card(tmp_path / "warp_calibrated.safetensors").metrics["calibration"]
    assert calibrated["data_fingerprint"]["files"] == 2 * len(rows)  # a family the data does not hold: nothing to leave out
