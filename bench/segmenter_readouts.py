"""Is the segmenter's map read well? Image-level aggregates of the map, and analysis at the training scale, compared.

Two questions about how a scan turns the segmenter's probability map into
figures, asked without retraining:

- **Image-level score.** The scan scores an image by the mean of the top 1 %
  of its map (forensics.masks.manipulation_score), then Platt scaling, which
  is monotone and so leaves ROC-AUC alone. Other aggregates (a smaller or
  larger top share, the mean, the flagged share, the largest flagged region,
  the maximum of a smoothed map, the most confident single class) are scored
  by image-level ROC-AUC on the calibration split, where one would be chosen,
  and reported on the held-out split and on the held-out-photographs check
  (bench.independent_check's procedures on scikit-image's held-out
  photographs; the reserved photographs are never used here).
- **Scale.** The segmenter trains on 256 px images and scans at native
  resolution, so a check image of 300-600 px shows it larger regions than it
  trained on. The check is scored at native resolution, with the image shrunk
  to a 256 px short side (map stretched back), with the mean of the two maps'
  probabilities, and with the scan's coarse pass (the mean of their class
  logits, what a card's `coarse_short_side` does).

A benchmark that reports; it never asserts. Writes a JSON, a bar chart of
the aggregates' ROC-AUC (same name, `.png`) and the check's pixel F1 against the
pixel threshold for each scale (`_thresholds.png`).

    python -m bench.segmenter_readouts [--segmenter CKPT] [--calibration .data/mcp/calibration]
                                       [--heldout .data/mc/heldout] [--count 180]
                                       [--output bench/results/segmenter_readouts.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.independent_check import MISSED_F1, image_pixel_f1

TOP_SHARES = (0.001, 0.003, 0.01, 0.03, 0.1)
SCAN_AGGREGATE = "top 1%"  # forensics.masks.manipulation_score, as a scan computes it
TRAINING_SCALE = 256  # the short side the shipped recipe's images have (forgescan make-dataset manipulations)
THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))  # forensics.calibration.threshold_for_best_f1's


def aggregates(probabilities: np.ndarray, pixel_threshold: float) -> dict[str, float]:
    """Candidate image-level scores of one map: (H, W) P(manipulated) or (C, H, W) class probabilities."""
    from scipy import ndimage

    from forensics.masks import manipulated_probabilities, manipulation_score

    manipulated = manipulated_probabilities(probabilities).astype(np.float32)
    scores = {f"top {share * 100:g}%": manipulation_score(manipulated, share) for share in TOP_SHARES}
    flagged = manipulated >= pixel_threshold
    labelled, regions = ndimage.label(flagged)
    scores |= {
        "mean": float(manipulated.mean()),
        "flagged share": float(flagged.mean()),
        "largest flagged region": float(np.bincount(labelled.ravel())[1:].max() / flagged.size) if regions else 0.0,
        "smoothed max (sigma 4 px)": float(ndimage.gaussian_filter(manipulated, 4).max()),
    }
    if probabilities.ndim == 3:
        scores["most confident class, top 1%"] = max(manipulation_score(probabilities[c]) for c in range(1, len(probabilities)))
    return scores


def _map(segmenter, pixels: np.ndarray) -> np.ndarray:
    view, _scale = segmenter.view(pixels)
    return next(segmenter.probability_maps([view]))  # the card's own analysis (its coarse pass too, when it has one)


def _dataset(root: str) -> list[tuple[str, bytes, bool]]:
    import fsspec

    from forensics.training.datasets import find_image_mask_pairs

    items = []
    for pair in find_image_mask_pairs(root):
        with fsspec.open(pair.image_uri, "rb") as handle:
            data = handle.read()
        manipulated = False
        if pair.mask_uri:
            with fsspec.open(pair.mask_uri, "rb") as handle:
                manipulated = bool(np.asarray(Image.open(handle)).any())
        items.append((pair.image_uri, data, manipulated))
    return items


def image_level(labels: list[bool], rows: list[dict[str, float]]) -> dict:
    """Every aggregate's image-level ROC-AUC, from one row of aggregates per image."""
    from sklearn.metrics import roc_auc_score

    return {"images": len(labels), "manipulated": int(np.sum(labels)),
            "roc_auc": {key: float(roc_auc_score(labels, [row[key] for row in rows])) for key in rows[0]}}


def score_set(segmenter, name: str, items: list[tuple[str, bytes, bool]]) -> dict:
    """Every aggregate's image-level ROC-AUC over `items` (name, bytes, manipulated)."""
    from tqdm.auto import tqdm

    from forensics.decode import decode_image

    threshold = segmenter.card.threshold("pixel")
    rows = []
    for _name, data, _manipulated in tqdm(items, desc=name, mininterval=2.0):
        decoded = decode_image(data, [segmenter.card.input_spec])
        rows.append(aggregates(_map(segmenter, decoded.inputs[segmenter.card.input_spec]), threshold))
    return image_level([manipulated for _name, _data, manipulated in items], rows)


def score_check(segmenter, archive: list[dict]) -> tuple[dict, dict]:
    """The held-out-photographs check, one segmenter pass per scale: every aggregate's image-level ROC-AUC of the
    native map (as score_set), and for the map at native resolution, at the training scale, the mean of their
    probabilities and the scan's coarse pass (a card's `coarse_short_side`: the mean of their class logits,
    forensics.tiling.mean_of_scales): pixel F1 at the card's pixel threshold (original resolution) and at the
    best of 0.05-0.95 (a readout of what the threshold costs, never a choice), ROC-AUC of the top-1% score, the
    share of authentic pixels flagged and the spliced images missed."""
    threshold, card = segmenter.card.threshold("pixel"), segmenter.card
    segmenter.card = card.replace(coarse_short_side=0)  # each scale on its own; combined here
    try:
        return _score_scales(segmenter, archive, threshold)
    finally:
        segmenter.card = card


def _score_scales(segmenter, archive: list[dict], threshold: float) -> tuple[dict, dict]:
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    from forensics.decode import decode_image
    from forensics.inference import segmenter_logit_maps
    from forensics.masks import manipulated_probabilities, manipulation_score, upsample_probabilities
    from forensics.metrics import PixelCounts
    from forensics.tiling import coarse_view, mean_of_scales

    ways = ("native", f"short side {TRAINING_SCALE} px", "mean of both", f"coarse pass {TRAINING_SCALE} (the scan's)")
    counts = {way: PixelCounts() for way in ways}
    counts_by_threshold = {way: {cut: PixelCounts() for cut in THRESHOLD_GRID} for way in ways}
    scores, flagged, labels, aggregate_rows = {way: [] for way in ways}, {way: [] for way in ways}, [], []
    missed = dict.fromkeys(ways, 0)  # spliced images whose own pixel F1 is below MISSED_F1
    for item in tqdm(archive, desc="held-out-photographs check", mininterval=2.0):
        decoded = decode_image(item["data"], [segmenter.card.input_spec])
        height, width = decoded.height, decoded.width
        view, _scale = segmenter.view(decoded.inputs[segmenter.card.input_spec])
        native_logits = next(segmenter_logit_maps(segmenter, [view], class_maps=True))
        aggregate_rows.append(aggregates(segmenter.probabilities(native_logits), threshold))
        small = coarse_view(view, TRAINING_SCALE)
        coarse_logits = native_logits if small is None else next(segmenter_logit_maps(segmenter, [small], class_maps=True))
        native, shrunk, combined = (
            upsample_probabilities(manipulated_probabilities(segmenter.probabilities(logits)), height, width)
            for logits in (native_logits, coarse_logits, mean_of_scales(native_logits, coarse_logits)))
        for way, probabilities in zip(ways, (native, shrunk, (native + shrunk) / 2, combined)):
            counts[way].add(probabilities >= threshold, item["mask"])
            for cut in THRESHOLD_GRID:
                counts_by_threshold[way][cut].add(probabilities >= cut, item["mask"])
            scores[way].append(manipulation_score(probabilities))
            if item["kind"] == "authentic":
                flagged[way].append(float((probabilities >= threshold).mean()))
            else:
                missed[way] += image_pixel_f1(probabilities >= threshold, item["mask"]) < MISSED_F1
        labels.append(item["kind"] == "spliced")
    scales = {}
    for way in ways:
        best = max(THRESHOLD_GRID, key=lambda cut: counts_by_threshold[way][cut].f1)
        scales[way] = {"pixel_f1": counts[way].to_dict().get("pixel_f1"), "roc_auc": float(roc_auc_score(labels, scores[way])),
                       "authentic_flagged_pixel_share": float(np.mean(flagged[way])),
                       f"spliced_images_with_pixel_f1_below_{MISSED_F1}": missed[way],
                       "best_pixel_f1": counts_by_threshold[way][best].f1, "best_pixel_threshold": best,
                       "pixel_f1_by_threshold": {str(cut): counts_by_threshold[way][cut].f1 for cut in THRESHOLD_GRID}}
    return image_level(labels, aggregate_rows), scales


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(result["image_level"])
    keys = list(result["image_level"][sets[0]]["roc_auc"])
    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(sets)
    for index, name in enumerate(sets):
        values = [result["image_level"][name]["roc_auc"][key] for key in keys]
        axes.bar(np.arange(len(keys)) + index * width, values, width, label=name)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xticks(np.arange(len(keys)) + width * (len(sets) - 1) / 2, keys, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0.4, 1.0)
    axes.set_ylabel("image-level ROC-AUC")
    axes.set_title(f"{result['segmenter']}: image-level aggregates of the map (the scan uses {SCAN_AGGREGATE})", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_thresholds(result: dict, path: Path) -> None:
    """Pixel F1 on the held-out-photographs check against the pixel threshold, one curve per scale, with the
    card's threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for way, figures in result["scales_on_heldout_photographs_check"].items():
        curve = figures["pixel_f1_by_threshold"]
        axes.plot([float(cut) for cut in curve], list(curve.values()), marker=".", label=way)
    axes.axvline(result["pixel_threshold"], color="grey", linewidth=0.8, linestyle="--", label="the card's pixel threshold")
    axes.set_xlabel("pixel threshold")
    axes.set_ylabel("pixel F1 (original resolution)")
    axes.set_title(f"{result['segmenter']}: held-out-photographs check", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", help="segmenter checkpoint (default: the shipped one)")
    parser.add_argument("--calibration", default=".data/mcp/calibration", help="where an aggregate would be chosen")
    parser.add_argument("--heldout", default=".data/mc/heldout", help="the held-out split")
    parser.add_argument("--count", type=int, default=180, help="images in the held-out-photographs check")
    parser.add_argument("--output", type=Path, default=Path("bench/results/segmenter_readouts.json"))
    args = parser.parse_args()
    from bench.independent_check import build_archive
    from forensics.checkpoint import bundled_checkpoint
    from forensics.inference import SegmenterPredictor

    for folder in (args.calibration, args.heldout):
        if not Path(folder).is_dir():
            sys.exit(f"{folder} does not exist: make it with the `forgescan make-dataset manipulations` commands "
                     "in docs/training.md (\"Reproducing the demo checkpoints\"), or pass --calibration / --heldout.")
    segmenter = SegmenterPredictor.from_checkpoint(args.segmenter or bundled_checkpoint("segmenter"))
    archive = [item for item in build_archive(args.count, photographs="heldout") if item["kind"] != "generated"]
    check, scales = score_check(segmenter, archive)
    by_set = {
        "calibration split": score_set(segmenter, "calibration split", _dataset(args.calibration)),
        "held-out split": score_set(segmenter, "held-out split", _dataset(args.heldout)),
        f"held-out-photographs check, {args.count} images": check,
    }
    calibration_auc = by_set["calibration split"]["roc_auc"]
    result = {
        "command": "python -m bench.segmenter_readouts " + " ".join(sys.argv[1:]),
        "segmenter": segmenter.card.version,
        "scan_aggregate": SCAN_AGGREGATE,
        "pixel_threshold": segmenter.card.threshold("pixel"),
        "chosen_on_calibration_split": max(calibration_auc, key=calibration_auc.get),
        "image_level": by_set,
        "scales_on_heldout_photographs_check": scales,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.output.with_suffix(".png"))
    plot_thresholds(result, args.output.with_name(args.output.stem + "_thresholds.png"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
