"""Fit a temperature and decision thresholds on held-out data and write them into the model card.

    forgescan calibrate classifier --checkpoint model.safetensors --data HELDOUT [--target-fpr 0.05]
    forgescan calibrate segmenter  --checkpoint model.safetensors --data HELDOUT [--target-fpr 0.05]
                                   [--target-pixel-fpr 0.01] [--coarse-short-side 256] [--mirror-views 4]

The temperature minimises the held-out negative log-likelihood; thresholds are
the lowest score whose false-positive rate on held-out negatives stays at or
below --target-fpr, and never below 0.5 (classifier: `ai_generated`; segmenter:
`manipulated`), and the `pixel` threshold with the best pixel F1 among those that mark at most
--target-pixel-fpr of authentic images' pixels. The scanner reads both from
the card. Use data the model was not trained on. --coarse-short-side sets the card's
`coarse_short_side` (a second pass over the whole image shrunk to that short side, averaged
with the native tiles; 0 turns it off) and --mirror-views its `mirror_views` (each tile also seen
mirrored, the logits averaged; 1 turns it off) before fitting, since the thresholds belong to the map
they make.

A leave-one-family-out checkpoint (trained with --exclude-family) is calibrated without those
families too: every sample that carries one is left out of --data, as training left it out, so its
thresholds never see the family it is tested on. The report records what was left out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jobs.cli import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forensics.calibration import DEFAULT_TARGET_FPR, DEFAULT_TARGET_PIXEL_FPR, EVALUATION_BATCH_SIZE
    from forensics.model_card import MIRROR_VIEWS

    parser.add_argument("model", choices=("classifier", "segmenter"))
    parser.add_argument("--checkpoint", required=True, help="safetensors checkpoint whose card is updated")
    parser.add_argument("--data", required=True, help="held-out labelled set (same layouts as `forgescan train`)")
    parser.add_argument("--masks", help="segmenter: mask folder, when --data is the images folder")
    parser.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR,
                        help=f"false-positive rate the thresholds allow (default {DEFAULT_TARGET_FPR})")
    parser.add_argument("--target-pixel-fpr", type=float, default=DEFAULT_TARGET_PIXEL_FPR,
                        help="segmenter: share of an authentic image's pixels the pixel threshold may mark; the best-F1 "
                             f"threshold among those that keep to it (default {DEFAULT_TARGET_PIXEL_FPR}; 1 = best F1 alone)")
    parser.add_argument("--coarse-short-side", type=int,
                        help="segmenter: also analyse each image shrunk to this short side and average the two maps "
                             "(written into the card; 0 = native tiles only; default: as the card has it)")
    parser.add_argument("--mirror-views", type=int, choices=MIRROR_VIEWS,
                        help="segmenter: also show the model each tile mirrored (2: left-right; 4: and top-bottom and "
                             "both) and average the logits (written into the card; 1 = off; default: as the card has it)")
    parser.add_argument("--output-checkpoint", help="write a calibrated copy here instead of updating --checkpoint in place")
    parser.add_argument("--batch-size", type=int, default=EVALUATION_BATCH_SIZE,
                        help=f"images per model call (default {EVALUATION_BATCH_SIZE})")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from forensics import code_version
    from forensics.calibration import check_target_pixel_fpr
    from forensics.checkpoint import CheckpointError, update_card
    from forensics.training import DatasetError

    try:
        check_target_pixel_fpr(args.target_pixel_fpr)
    except ValueError as error:
        print(f"forgescan calibrate: {error}", file=sys.stderr)
        return 2
    segmenter_flags = [flag for flag, value in (("--coarse-short-side", args.coarse_short_side),
                                                ("--mirror-views", args.mirror_views)) if value is not None]
    if args.model == "classifier" and segmenter_flags:
        settings = "is a segmenter setting; drop it" if len(segmenter_flags) == 1 else "are segmenter settings; drop them"
        print(f"forgescan calibrate: {' and '.join(segmenter_flags)} {settings} when calibrating the classifier.",
              file=sys.stderr)
        return 2
    try:
        card, report = (calibrate_classifier if args.model == "classifier" else calibrate_segmenter)(args)
        destination = Path(args.checkpoint)
        if args.output_checkpoint:
            destination = Path(args.output_checkpoint).with_suffix(".safetensors")
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.checkpoint, destination)
        # the code this calibration ran at, beside the card's `code_version` (the code that trained it)
        metrics = {**card.metrics, "calibration": {**card.metrics["calibration"], "code_version": code_version()}}
        update_card(destination, card.replace(reproduce=_append_command(card.reproduce, args.data),
                                              notes=calibrated_notes(card.notes, args.data), metrics=metrics))
    except (DatasetError, CheckpointError, ValueError) as error:
        print(f"forgescan calibrate: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(destination), **report}, indent=2))
    return 0


def _append_command(reproduce: str, data: str) -> str:
    """The card's reproduce chain with the command that made the calibration data (when recorded) and
    this calibrate command added."""
    import shlex

    from jobs.make_dataset import chain_with_dataset

    program = Path(sys.argv[0]).name
    skip = 2 if program in ("forgescan", "cli.py") else 1
    command = " ".join(["forgescan calibrate"] + [shlex.quote(a) for a in sys.argv[skip:]])
    if program not in ("forgescan", "cli.py", "calibrate.py"):
        return reproduce  # called as a library: no command line to record
    return chain_with_dataset(reproduce, data, command)


def _load(args, kind: str):
    from forensics.checkpoint import load_checkpoint
    from forensics.inference import ClassifierPredictor, SegmenterPredictor, pick_device

    model, card = load_checkpoint(args.checkpoint, expected_kind=kind)
    return (ClassifierPredictor if kind == "classifier" else SegmenterPredictor)(model, card, pick_device(args.device))


def _excluded_families(card) -> list[str]:
    """The families the card's model was trained without (`forgescan train --exclude-family`), which its
    calibration leaves out too; announced, since the data then shrinks."""
    excluded = sorted(card.training_data.get("excluded_families", ()))
    if excluded:
        print(f"forgescan calibrate: {card.version} was trained without {excluded}; calibrating without the samples "
              "that carry them as well.", file=sys.stderr)
    return excluded


def _excluded_report(excluded: list[str]) -> dict[str, Any]:
    return {"excluded_families": excluded} if excluded else {}


def calibrate_classifier(args) -> tuple[Any, dict[str, Any]]:
    from forensics.calibration import binary_nll, fit_temperature, sigmoid, decision_threshold, expected_calibration_error
    from forensics.metrics import classification_metrics
    from forensics.training import find_labelled_images, fingerprint_samples, without_families
    from forensics.training.evaluation import classifier_logits

    predictor = _load(args, "classifier")
    excluded = _excluded_families(predictor.card)
    samples = without_families(find_labelled_images(args.data), excluded, missing_ok=True)
    logits, labels = classifier_logits(predictor, samples, args.batch_size)
    temperature = fit_temperature(logits, labels)
    scores = sigmoid(logits, temperature)
    threshold = decision_threshold(scores, labels, args.target_fpr)
    report = {
        "temperature": temperature, "thresholds": {"ai_generated": threshold}, "target_fpr": args.target_fpr,
        "nll_before": binary_nll(logits, labels, predictor.card.temperature), "nll_after": binary_nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(sigmoid(logits, predictor.card.temperature), labels),
        "ece_after": expected_calibration_error(scores, labels),
        "data": str(args.data), "data_fingerprint": fingerprint_samples(samples), **_excluded_report(excluded),
        "at_threshold": {k: v for k, v in classification_metrics(labels, scores, threshold).items() if k != "classification_report"},
    }
    card = predictor.card
    card = card.replace(temperature=temperature, thresholds={**card.thresholds, "ai_generated": threshold},
                        metrics={**card.metrics, "calibration": report})
    return card, report


def calibrate_segmenter(args) -> tuple[Any, dict[str, Any]]:
    from forensics.calibration import (binary_nll, decision_threshold, expected_calibration_error, fit_platt,
                                       fit_temperature, pixel_threshold, platt, sigmoid)
    from forensics.model_card import NATIVE_TILES
    from forensics.training import (find_image_mask_pairs, fingerprint_samples, manipulation_families_of,
                                    without_manipulation_families)
    from forensics.training.evaluation import segmenter_outputs

    predictor = _load(args, "segmenter")
    if args.coarse_short_side is not None:
        if predictor.card.resize_mode != NATIVE_TILES and args.coarse_short_side:
            raise ValueError(f"--coarse-short-side adds a pass to native-tile analysis, but {args.checkpoint} analyses "
                             f"`{predictor.card.resize_mode}` views; drop the flag for this checkpoint.")
        predictor.card = predictor.card.replace(coarse_short_side=args.coarse_short_side)
    if args.mirror_views is not None:
        predictor.card = predictor.card.replace(mirror_views=args.mirror_views)
    pairs = find_image_mask_pairs(args.data, args.masks)
    excluded = _excluded_families(predictor.card)
    if excluded:
        pairs = without_manipulation_families(pairs, manipulation_families_of(args.data, pairs), excluded, missing_ok=True)
    outputs = segmenter_outputs(predictor, pairs, args.batch_size, keep_examples=0)
    logits, labels = np.concatenate(outputs.pixel_logits), np.concatenate(outputs.pixel_labels).astype(float)
    temperature = fit_temperature(logits, labels)
    card = predictor.card
    has_mask = np.array(outputs.has_mask)
    pixel, pixel_report = pixel_threshold(sigmoid(logits, temperature), labels, outputs.authentic_samples(), args.target_pixel_fpr)
    thresholds = {**card.thresholds, "pixel": pixel}
    score_calibration, image_report = dict(card.score_calibration), {}
    if (~has_mask).any() and has_mask.any():
        raw = outputs.manipulation_scores(temperature)
        score_calibration = fit_platt(raw, has_mask)
        calibrated = platt(raw, score_calibration["slope"], score_calibration["intercept"])
        thresholds["manipulated"] = decision_threshold(calibrated, has_mask, args.target_fpr)
        image_report = {"score_calibration": score_calibration,
                        "image_ece_raw": expected_calibration_error(raw, has_mask),
                        "image_ece_calibrated": expected_calibration_error(calibrated, has_mask)}
    else:
        print("forgescan calibrate: the data needs both authentic images (empty masks) and manipulated ones to calibrate "
              "the image-level score; the `manipulated` threshold and score calibration are kept.", file=sys.stderr)
    report = {
        "temperature": temperature, "thresholds": thresholds, "target_fpr": args.target_fpr,
        "pixel_nll_before": binary_nll(logits, labels, card.temperature), "pixel_nll_after": binary_nll(logits, labels, temperature),
        "pixel_threshold": pixel_report,
        **image_report, "data": str(args.data), "data_fingerprint": fingerprint_samples(pairs), **_excluded_report(excluded),
    }
    card = card.replace(temperature=temperature, thresholds=thresholds, score_calibration=score_calibration,
                        metrics={**card.metrics, "calibration": report})
    return card, report


def calibrated_notes(notes: str, data) -> str:
    """The card's notes with the calibration said where it happened (training wrote "fitted on the
    validation split"; a second calibration replaces the first one's clause)."""
    said = f"temperature and thresholds refitted on `{data}` by `forgescan calibrate`."
    kept = notes.split(" Calibration: ")[0]
    return f"{kept} Calibration: {said}" if kept else said


if __name__ == "__main__":
    sys.exit(run_module("jobs.calibrate"))
