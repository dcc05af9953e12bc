"""Evaluate checkpoints on a labelled set: image-level AUC / accuracy / F1 and pixel F1 / IoU, JSON + pictures.

    forgescan evaluate classifier --checkpoint runs/classifier/classifier.safetensors --data DATASET --output eval/
    forgescan evaluate classifier --checkpoint runs/c/fold_0/model.safetensors --checkpoint runs/c/fold_1/model.safetensors ...
    forgescan evaluate segmenter  --checkpoint runs/segmenter/segmenter.safetensors --data DATASET --output eval/
    forgescan evaluate classifier --checkpoint ALL.safetensors --data HELDOUT --calibration-data CALIBRATION \
        --leave-one-out runs/without_pixel_shuffle/classifier.safetensors --leave-one-out ... --output eval/
    forgescan evaluate segmenter  --checkpoint ALL.safetensors --data HELDOUT \
        --leave-one-out runs/without_splice/segmenter.safetensors --leave-one-out ... --output eval/

Images are decoded and cut exactly as the scanner does (forensics.tiling), and
scores use each card's temperature and thresholds, so the figures describe what
a scan would report. Several classifier checkpoints are evaluated one by one and
as an ensemble (mean calibrated probability, mean threshold).

The classifier protocol: with `--calibration-data`, every checkpoint's
temperature and threshold are fitted on that split, which must share no image
and no source photograph with `--data` (checked); the figures include the
expected calibration error (ECE) and a reliability diagram, and a table per
generator family (its fakes against all real images). Each `--leave-one-out`
checkpoint was trained with `forgescan train classifier --exclude-family F`
(its card says which): it is tested on the real images and the fakes of F
only, the family it never saw, beside the all-family model on the same images.
The tables go to `report.md`.

The segmenter protocol, on a dataset made by `forgescan make-dataset
manipulations` (its samples.csv names each image's families): a table per
manipulation family (pixel F1 over the images carrying it, their image-level
ROC-AUC against all authentic images), and each `--leave-one-out` segmenter,
trained with `forgescan train segmenter --exclude-family F`, tested on the
authentic images and those carrying F, with its own card's calibration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jobs.cli import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forensics.calibration import DEFAULT_TARGET_FPR, EVALUATION_BATCH_SIZE

    parser.add_argument("model", choices=("classifier", "segmenter"))
    parser.add_argument("--checkpoint", action="append",
                        help="safetensors checkpoint; repeat for a fold ensemble (classifier). Default: the shipped demo checkpoint")
    parser.add_argument("--data", required=True, help="labelled set: real/ + fake/ or Parquet (classifier); images/ + masks/ (segmenter)")
    parser.add_argument("--masks", help="segmenter: mask folder, when --data is the images folder")
    parser.add_argument("--output", required=True, help="folder for metrics.json and the pictures")
    parser.add_argument("--batch-size", type=int, default=EVALUATION_BATCH_SIZE,
                        help=f"images per model call (default {EVALUATION_BATCH_SIZE})")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--calibration-data",
                        help="classifier: fit each checkpoint's temperature and threshold on this labelled split (disjoint "
                             "from --data: no shared image or source photograph) instead of using the card's")
    parser.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR,
                        help=f"with --calibration-data: false-positive rate of the threshold (default {DEFAULT_TARGET_FPR})")
    parser.add_argument("--leave-one-out", action="append", default=[], metavar="CHECKPOINT",
                        help="a checkpoint trained with --exclude-family F (repeat, one per family); tested on --data's "
                             "real (authentic) images and those of F only")
    parser.add_argument("--record-in-card", action="store_true",
                        help="write the headline figures (per family, leave-one-family-out, ECE) into the (single) "
                             "checkpoint's card under metrics.evaluation, and this command into its `reproduce`")


def run(args: argparse.Namespace) -> int:
    from forensics.checkpoint import CheckpointError
    from forensics.training import DatasetError

    output = Path(args.output)
    try:
        checkpoints = args.checkpoint or [str(shipped_checkpoint(args.model))]
        if not Path(checkpoints[0]).exists():
            raise ValueError(f"No checkpoint given and no demo {args.model} checkpoint ships in this installation: pass --checkpoint.")
        summary = (evaluate_classifier if args.model == "classifier" else evaluate_segmenter)(args, checkpoints, output)
    except (DatasetError, CheckpointError, ValueError) as error:
        print(f"forgescan evaluate: {error}", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(_headline(summary), indent=2))
    if args.record_in_card:
        if len(checkpoints) != 1:
            print("forgescan evaluate: --record-in-card needs exactly one --checkpoint.", file=sys.stderr)
            return 2
        record_in_card(checkpoints[0], summary)
    return 0


def record_in_card(checkpoint: str, summary: dict[str, Any]) -> None:
    """Add the headline figures, the data fingerprint and the command to the card's metrics."""
    import shlex

    from forensics import code_version
    from forensics.checkpoint import read_card, update_card

    from jobs.make_dataset import chain_with_dataset

    card = read_card(checkpoint)
    figures = _headline(summary)
    figures.pop("checkpoint", None)
    figures = figures.get("models", {}).get(checkpoint, figures) if "models" in figures else figures
    command = " ".join(["forgescan evaluate"] + [shlex.quote(a) for a in sys.argv[2 if Path(sys.argv[0]).name in ("forgescan", "cli.py") else 1:]])
    evaluation = {"data": summary["data"], "data_fingerprint": summary["data_fingerprint"], "count": summary["count"],
                  **figures, "command": command, "code_version": code_version()}  # the code this evaluation ran at
    for key in ("calibration_data", "per_family", "leave_one_family_out"):
        if key in summary:
            evaluation[key] = summary[key]
    chain = _with_leave_one_out_recipes(_without_recorded_evaluations(card.reproduce, command), summary)
    reproduce = chain_with_dataset(chain, [summary.get("calibration_data"), summary["data"]], command)
    update_card(checkpoint, card.replace(metrics={**card.metrics, "evaluation": evaluation}, reproduce=reproduce))


def _without_recorded_evaluations(chain: str, command: str) -> str:
    """`chain` less the earlier `forgescan evaluate ... --record-in-card` steps that `command` replaces (a card
    holds one evaluation; the same command is kept, so recording it again does not repeat it)."""
    steps = [step for step in chain.split(" && ") if step]
    return " && ".join(step for step in steps if step == command
                       or not (step.startswith("forgescan evaluate ") and "--record-in-card" in step.split()))


def _with_leave_one_out_recipes(chain: str, summary: dict[str, Any]) -> str:
    """`chain` plus, for each leave-one-out checkpoint evaluated, the steps of its own card's `reproduce` not yet
    in it (the dataset and the training run without the family), so the evaluation's figures can be reproduced."""
    from forensics.checkpoint import read_card

    steps = [step for step in chain.split(" && ") if step]
    for row in summary.get("leave_one_family_out", []):
        steps = merged_steps(steps, [step for step in read_card(row["checkpoint"]).reproduce.split(" && ") if step])
    return " && ".join(steps)


def merged_steps(steps: list[str], other: list[str]) -> list[str]:
    """`steps` with the steps of `other` it lacks, each placed before the first of `steps` that comes after it
    in `other` (at the end where none does): both chains keep their order, so a step that makes an input
    (the backbone-weights export, a dataset) still runs before the steps that read it."""
    merged = list(steps)
    for position, step in enumerate(other):
        if step in merged:
            continue
        later = [merged.index(s) for s in other[position + 1:] if s in merged]
        merged.insert(min(later) if later else len(merged), step)
    return merged


def shipped_checkpoint(model: str) -> Path:
    """The demo checkpoint that ships inside the forensics package."""
    from forensics.checkpoint import BUNDLED_CHECKPOINTS

    return BUNDLED_CHECKPOINTS / f"{model}.safetensors"


def _predictor(path: str, kind: str, device):
    from forensics.checkpoint import load_checkpoint
    from forensics.inference import ModelPredictor, pick_device

    model, card = load_checkpoint(path, expected_kind=kind)
    return ModelPredictor(model, card, pick_device(device))


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "f1", "roc_auc", "pixel_f1", "pixel_iou", "all_one_mask_f1", "threshold", "temperature",
            "expected_calibration_error", "per_family")
    def pick(figures):
        return {k: figures[k] for k in keys if k in figures}
    headline = {name: pick(value) if isinstance(value, dict) else value for name, value in summary.items()
                if name in ("ensemble", "pixel", "pixel_every_image_masked", "image_level", "count", "checkpoint")}
    if "classes" in summary:
        headline["classes"] = {"mean_iou": summary["classes"]["mean_iou"],
                               "iou": {name: values["iou"] for name, values in summary["classes"]["per_class"].items()}}
    if "models" in summary:
        headline["models"] = {name: pick(figures) for name, figures in summary["models"].items()}
    return headline


def evaluate_classifier(args, checkpoints: list[str], output: Path) -> dict[str, Any]:
    from forensics.metrics import plot_confusion_matrix, plot_reliability_diagram, plot_roc_curves
    from forensics.training import find_labelled_images, fingerprint_samples
    from forensics.training.evaluation import check_disjoint, per_family_metrics

    samples = find_labelled_images(args.data)
    calibration_samples = None
    if args.calibration_data:
        calibration_samples = find_labelled_images(args.calibration_data)
        check_disjoint(samples, calibration_samples, args.data, args.calibration_data, "calibration")
    families = [s.family for s in samples]
    models, curves, probabilities, thresholds = {}, {}, [], []
    labels = None
    for path in checkpoints:
        predictor = _predictor(path, "classifier", args.device)
        scores, labels, calibration = _calibrated_scores(predictor, samples, calibration_samples, args)
        models[path] = {"version": predictor.version, **calibration, **_figures(labels, scores, calibration["threshold"])}
        models[path]["per_family"] = per_family_metrics(labels, scores, families, calibration["threshold"])
        curves[Path(path).parent.name + "/" + Path(path).stem] = (labels, scores)
        probabilities.append(scores)
        thresholds.append(calibration["threshold"])
    summary: dict[str, Any] = {"data": str(args.data), "data_fingerprint": fingerprint_samples(samples),
                               "count": len(samples), "models": models}
    if args.calibration_data:
        summary["calibration_data"] = str(args.calibration_data)
    final = models[checkpoints[0]]
    final_scores = probabilities[0]
    if len(checkpoints) > 1:
        final_scores = np.mean(probabilities, axis=0)
        final = summary["ensemble"] = _figures(labels, final_scores, float(np.mean(thresholds)))
        final["per_family"] = per_family_metrics(labels, final_scores, families, final["threshold"])
        curves["ensemble"] = (labels, final_scores)
    if args.leave_one_out:
        summary["leave_one_family_out"] = leave_one_family_out(args, samples, calibration_samples, final["per_family"])
    output.mkdir(parents=True, exist_ok=True)
    plot_roc_curves(curves, output / "roc_curve.png", "Classifier ROC")
    plot_confusion_matrix(final["confusion_matrix"], output / "confusion_matrix.png",
                          title="Confusion matrix" + (" (ensemble)" if len(checkpoints) > 1 else ""))
    plot_reliability_diagram(curves, output / "reliability_diagram.png", "Classifier reliability: P(AI-generated)")
    (output / "report.md").write_text(classifier_report(summary, checkpoints))
    print(classifier_report(summary, checkpoints), file=sys.stderr)
    return summary


def _figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    from forensics.calibration import expected_calibration_error
    from forensics.metrics import classification_metrics

    figures = classification_metrics(labels, scores, threshold)
    figures["expected_calibration_error"] = expected_calibration_error(scores, labels)
    return figures


def _calibrated_scores(predictor, samples, calibration_samples, args, excluded: tuple[str, ...] = ()):
    """P(AI-generated) of `samples`: the card's temperature and threshold, or, with calibration samples
    (minus the fakes of `excluded` families), a temperature and threshold fitted on those."""
    from forensics.calibration import sigmoid
    from forensics.training import fingerprint_samples, without_families
    from forensics.training.evaluation import classifier_logits, fit_calibration

    logits, labels = classifier_logits(predictor, samples, args.batch_size)
    card = predictor.card
    temperature, threshold, source = card.temperature, card.threshold("ai_generated"), "model card"
    if calibration_samples is not None:
        chosen = without_families(calibration_samples, excluded, missing_ok=True)
        fitted = card.metrics.get("calibration") or {}
        if fitted.get("data_fingerprint") == fingerprint_samples(chosen) and fitted.get("target_fpr") == args.target_fpr:
            source = str(args.calibration_data)  # `forgescan calibrate` fitted this card on exactly these images
        else:
            calibration_logits, calibration_labels = classifier_logits(predictor, chosen, args.batch_size)
            temperature, threshold = fit_calibration(calibration_logits, calibration_labels, args.target_fpr)
            source = str(args.calibration_data)
    return sigmoid(logits, temperature), labels, {"temperature": temperature, "threshold": threshold, "calibrated_on": source}


def _left_out_families(path: str, model: str) -> tuple[str, ...]:
    """The families a leave-one-out checkpoint was trained without (its card's training_data.excluded_families)."""
    from forensics.checkpoint import read_card

    excluded = tuple(read_card(path).training_data.get("excluded_families") or ())
    if not excluded:
        raise ValueError(f"--leave-one-out {path}: its card names no excluded family; train it with "
                         f"`forgescan train {model} --exclude-family FAMILY`.")
    return excluded


def leave_one_family_out(args, samples, calibration_samples, reference_per_family: list[dict]) -> list[dict[str, Any]]:
    """Each leave-one-out checkpoint on the real images and the fakes of the family it was trained without."""
    from forensics.training import FAKE

    reference = {row["family"]: row for row in reference_per_family}
    rows = []
    for path in args.leave_one_out:
        excluded = _left_out_families(path, "classifier")
        subset = [s for s in samples if s.label != FAKE or s.family in excluded]
        if not any(s.label == FAKE for s in subset):
            present = sorted({s.family for s in samples if s.label == FAKE and s.family})
            raise ValueError(f"--leave-one-out {path} was trained without {list(excluded)}, but {args.data} has no fakes "
                             f"of those families (it has {present}).")
        predictor = _predictor(path, "classifier", args.device)
        scores, labels, calibration = _calibrated_scores(predictor, subset, calibration_samples, args, excluded)
        figures = _figures(labels, scores, calibration["threshold"])
        family = "+".join(excluded)
        rows.append({
            "family": family, "checkpoint": path, "version": predictor.version, "fakes": int(labels.sum()),
            "reals": int((labels == 0).sum()), "roc_auc": figures["roc_auc"],
            "detection_rate": float((scores[labels == 1] >= calibration["threshold"]).mean()),
            "real_false_positive_rate": float((scores[labels == 0] >= calibration["threshold"]).mean()),
            "expected_calibration_error": figures["expected_calibration_error"], **calibration,
            "all_family_model": {k: reference[family][k] for k in ("roc_auc", "detection_rate")} if family in reference else None,
        })
    return rows


def classifier_report(summary: dict[str, Any], checkpoints: list[str]) -> str:
    """The evaluation as Markdown tables: headline, per family, leave-one-family-out."""
    final = summary.get("ensemble") or summary["models"][checkpoints[0]]
    name = "ensemble" if "ensemble" in summary else final.get("version", checkpoints[0])

    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [f"# Classifier evaluation: {name}", "",
             f"Test set `{summary['data']}` ({summary['count']} images); temperature and threshold from "
             f"{final.get('calibrated_on', 'the model cards')}.", "",
             "| accuracy | F1 | ROC-AUC | ECE | threshold |", "|---|---|---|---|---|",
             f"| {number(final['accuracy'])} | {number(final['f1'])} | {number(final['roc_auc'])} | "
             f"{number(final['expected_calibration_error'])} | {number(final['threshold'])} |", "",
             "## Per generator family (held-out split; each family's fakes against all real images)", "",
             "| family | fakes | ROC-AUC | detected at threshold |", "|---|---|---|---|"]
    for row in final["per_family"]:
        lines.append(f"| {row['family']} | {row['fakes']} | {number(row['roc_auc'])} | {number(row['detection_rate'])} |")
    if summary.get("leave_one_family_out"):
        lines += ["", "## Leave one family out (trained without the family, tested on it)", "",
                  "| family left out | fakes | ROC-AUC, family unseen | detected, unseen | real images flagged | ECE | "
                  "ROC-AUC, all-family model | detected, all-family model |", "|---|---|---|---|---|---|---|---|"]
        for row in summary["leave_one_family_out"]:
            reference = row.get("all_family_model") or {}
            lines.append(f"| {row['family']} | {row['fakes']} | {number(row['roc_auc'])} | {number(row['detection_rate'])} | "
                         f"{number(row['real_false_positive_rate'])} | {number(row['expected_calibration_error'])} | "
                         f"{number(reference.get('roc_auc'))} | {number(reference.get('detection_rate'))} |")
    return "\n".join(lines) + "\n"


MASKS_AS_WRITTEN = "as a scan writes them: only images whose manipulation score reaches the `manipulated` threshold get a mask"
MASKS_OF_EVERY_IMAGE = "every image's map at the pixel threshold, whatever its manipulation score (the masks before 7 Dec 2026)"


def evaluate_segmenter(args, checkpoints: list[str], output: Path) -> dict[str, Any]:
    from forensics.metrics import classification_metrics, plot_confusion_matrix, plot_mask_examples, plot_roc_curves
    from forensics.training import find_image_mask_pairs, fingerprint_samples
    from forensics.training.evaluation import segmenter_outputs

    if len(checkpoints) != 1:
        raise ValueError("Evaluate one segmenter checkpoint at a time (pass --checkpoint once).")
    pairs = find_image_mask_pairs(args.data, args.masks)
    predictor = _predictor(checkpoints[0], "segmenter", args.device)
    every_image = segmenter_outputs(predictor, pairs, args.batch_size)
    card = predictor.card
    scores = every_image.manipulation_scores(card.temperature, card.score_calibration)
    outputs = every_image.as_written(scores, card.threshold("manipulated"))
    summary: dict[str, Any] = {
        "data": str(args.data), "data_fingerprint": fingerprint_samples(pairs), "count": len(pairs),
        "checkpoint": checkpoints[0], "version": card.version, "temperature": card.temperature,
        "pixel": {"threshold": card.threshold("pixel"), "resolution": "original image size", "masks": MASKS_AS_WRITTEN,
                  **outputs.pixel_counts.to_dict()},
        "pixel_every_image_masked": {"threshold": card.threshold("pixel"), "resolution": "original image size",
                                     "masks": MASKS_OF_EVERY_IMAGE, **every_image.pixel_counts.to_dict()},
    }
    output.mkdir(parents=True, exist_ok=True)
    has_mask = np.array(outputs.has_mask)
    if has_mask.any() and not has_mask.all():
        from forensics.calibration import expected_calibration_error

        summary["image_level"] = classification_metrics(has_mask, scores, card.threshold("manipulated"),
                                                        class_names=("authentic", "manipulated"))
        summary["image_level"]["expected_calibration_error"] = expected_calibration_error(scores, has_mask)
        plot_roc_curves({"manipulation score": (has_mask, scores)}, output / "roc_curve.png", "Segmenter: image-level ROC")
        plot_confusion_matrix(summary["image_level"]["confusion_matrix"], output / "confusion_matrix.png",
                              class_names=("authentic", "manipulated"), title="Image-level confusion matrix")
    if outputs.class_confusion is not None:
        from forensics.metrics import class_metrics, class_stats_from_confusion
        from forensics.training.reports import row_fractions

        summary["classes"] = {**class_metrics(class_stats_from_confusion(outputs.class_confusion), card.class_names),
                              "class_names": list(card.class_names), "confusion_matrix": outputs.class_confusion.tolist(),
                              "resolution": "original image size"}
        plot_confusion_matrix(row_fractions(outputs.class_confusion), output / "class_confusion_matrix.png",
                              class_names=card.class_names, title="Pixel classes (share of each true class)")
    plot_mask_examples(outputs.examples, output / "mask_examples.png", card.threshold("pixel"), f"Segmenter {card.version}")
    summary["pixel_threshold_curve"] = _pixel_threshold_curve(outputs, card, output / "pixel_threshold_curve.png")
    families = _families_if_recorded(args.data, pairs, required=bool(args.leave_one_out))
    if families is not None and has_mask.any() and not has_mask.all():
        from forensics.training.evaluation import segmenter_family_metrics

        summary["per_family"] = segmenter_family_metrics(outputs, families, scores, card.threshold("manipulated"))
        if args.leave_one_out:
            summary["leave_one_family_out"] = segmenter_leave_one_family_out(args, pairs, families, summary["per_family"])
    (output / "report.md").write_text(segmenter_report(summary))
    return summary


def _pixel_threshold_curve(outputs, card, path: Path) -> dict[str, Any]:
    """What each pixel threshold would give on this set (the pixel samples calibration fits on, at the model's
    resolution), drawn with the card's threshold: the trade `forgescan calibrate --target-pixel-fpr` chooses on."""
    from forensics.calibration import pixel_threshold_curve, sigmoid
    from forensics.metrics import plot_pixel_threshold_curve

    logits, labels = np.concatenate(outputs.pixel_logits), np.concatenate(outputs.pixel_labels)
    curve = pixel_threshold_curve(sigmoid(logits, card.temperature), labels, outputs.authentic_samples())
    plot_pixel_threshold_curve(curve, path, card.threshold("pixel"), f"{card.version}\npixel F1 and authentic pixels marked (pixel samples)")
    return {"resolution": "model resolution, sampled pixels (as calibration sees them)", "rows": curve}


def _families_if_recorded(data: str, pairs, required: bool) -> list[tuple[str, ...]] | None:
    """Each pair's manipulation families from the dataset's samples.csv; None when it has none (unless `required`)."""
    from forensics.training import DatasetError, manipulation_families_of

    try:
        return manipulation_families_of(data, pairs)
    except DatasetError:
        if required:
            raise
        return None


def segmenter_leave_one_family_out(args, pairs, families, reference_per_family: list[dict]) -> list[dict[str, Any]]:
    """Each leave-one-out segmenter on the authentic images and the images carrying the family it never saw,
    with its own card's temperature, score calibration and thresholds (fitted without the family)."""
    from forensics.training.evaluation import segmenter_family_metrics, segmenter_outputs

    reference = {row["family"]: row for row in reference_per_family}
    rows = []
    for path in args.leave_one_out:
        excluded = _left_out_families(path, "segmenter")
        chosen = [i for i, applied in enumerate(families) if not applied or set(applied) & set(excluded)]
        if not any(families[i] for i in chosen):
            present = sorted({f for applied in families for f in applied})
            raise ValueError(f"--leave-one-out {path} was trained without {list(excluded)}, but {args.data} has no images "
                             f"of those families (it has {present}).")
        predictor = _predictor(path, "segmenter", args.device)
        every_image = segmenter_outputs(predictor, [pairs[i] for i in chosen], args.batch_size)
        label = "+".join(excluded)
        unseen = [(label,) if set(families[i]) & set(excluded) else () for i in chosen]
        scores = every_image.manipulation_scores(predictor.card.temperature, predictor.card.score_calibration)
        threshold = predictor.card.threshold("manipulated")
        (row,) = segmenter_family_metrics(every_image.as_written(scores, threshold), unseen, scores, threshold)
        family = row["family"]
        rows.append({**row, "checkpoint": path, "version": predictor.version,
                     "all_family_model": {k: reference[family][k] for k in ("pixel_f1", "roc_auc", "detection_rate")}
                     if family in reference else None})
    return rows


def segmenter_report(summary: dict[str, Any]) -> str:
    """The segmenter evaluation as Markdown: headline, per class, per family, leave-one-family-out."""
    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    pixel, image = summary["pixel"], summary.get("image_level") or {}
    every_image = summary.get("pixel_every_image_masked") or {}
    lines = [f"# Segmenter evaluation: {summary['version']}", "",
             f"Test set `{summary['data']}` ({summary['count']} images); thresholds and temperature from the model card. "
             "Pixel figures count the masks a scan writes (an image below the `manipulated` threshold gets none); "
             "the column beside them counts every image's map at the pixel threshold.", "",
             "| pixel F1 | pixel IoU | pixel F1, every image masked | all-ones mask F1 | image ROC-AUC | image ECE |",
             "|---|---|---|---|---|---|",
             f"| {number(pixel.get('pixel_f1'))} | {number(pixel.get('pixel_iou'))} | {number(every_image.get('pixel_f1'))} | "
             f"{number(pixel.get('all_one_mask_f1'))} | {number(image.get('roc_auc'))} | {number(image.get('expected_calibration_error'))} |"]
    if "classes" in summary:
        per_class = summary["classes"]["per_class"]
        lines += ["", "## Per class (pixel IoU at original size)", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {number(values['iou'])} |" for name, values in per_class.items()]
    if summary.get("per_family"):
        lines += ["", "## Per manipulation family (images carrying it; image ROC-AUC against all authentic images)", "",
                  "| family | images | pixel F1 | ROC-AUC | detected at threshold |", "|---|---|---|---|---|"]
        lines += [f"| {row['family']} | {row['images']} | {number(row['pixel_f1'])} | {number(row['roc_auc'])} | "
                  f"{number(row['detection_rate'])} |" for row in summary["per_family"]]
    if summary.get("leave_one_family_out"):
        lines += ["", "## Leave one family out (trained without the family, tested on it)", "",
                  "| family left out | images | pixel F1, unseen | ROC-AUC, unseen | detected, unseen | "
                  "authentic called manipulated | pixel F1, all-family model | ROC-AUC, all-family model |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in summary["leave_one_family_out"]:
            reference = row.get("all_family_model") or {}
            lines.append(f"| {row['family']} | {row['images']} | {number(row['pixel_f1'])} | {number(row['roc_auc'])} | "
                         f"{number(row['detection_rate'])} | {number(row.get('authentic_false_positive_rate'))} | "
                         f"{number(reference.get('pixel_f1'))} | {number(reference.get('roc_auc'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_module("jobs.evaluate"))
