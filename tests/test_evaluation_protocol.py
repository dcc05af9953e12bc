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


def test_calibrated_and_evaluated_card_reproduces_its_whole_chain(protocol, tmp_path, monkeypatch):
    from jobs import cli

    folder = protocol["folder"]
    checkpoint = tmp_path / "classifier.safetensors"
    calibrate = ["calibrate", "classifier", "--checkpoint", protocol["all"], "--data", str(folder / "calibration"),
                 "--output-checkpoint", str(checkpoint)]
    monkeypatch.setattr(sys, "argv", ["forgescan"] + calibrate)
    assert cli.main(calibrate) == 0
    calibrated = read_card(checkpoint)
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


def test_reliability_bins_follow_the_observed_rate():
    from forensics.metrics import reliability_bins

    rng = np.random.default_rng(0)
    probabilities = rng.random(20000)
    labels = rng.random(20000) < probabilities  # calibrated by construction
    for row in reliability_bins(probabilities, labels):
        assert abs(row["positive_rate"] - row["mean_probability"]) < 0.03
    overconfident = reliability_bins(np.where(labels, 0.99, 0.95), labels)
    assert overconfident[-1]["mean_probability"] > overconfident[-1]["positive_rate"] + 0.3
