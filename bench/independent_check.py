"""An independent check of the shipped models: photographs and procedures they were never trained on.

The sample photographs of scikit-learn (china, flower) and matplotlib
(grace_hopper) are reserved for this: no model is trained, calibrated,
selected or tuned on them. Made here, with procedures that differ from
forensics.synthetic's: authentic native-resolution crops; splices whose donor
region is resampled (bicubic, 0.6-1.6x), pasted with hard or blurred edges and
JPEG-compressed once afterwards; generated stand-ins from a different
up-sampling chain (bicubic down, bilinear up, a random smoothing kernel).
Each image goes through the scan's own forensics path (decode_image, the
cards' native views, stitched tiles, calibrated scores), so the figures are
what a scan of this archive would write. A check that reports; it never asserts.
Beside the JSON it draws, for an authentic and a spliced image of each
photograph, the image, the true mask, P(manipulated) and the mask a scan
writes (same name, `.jpg`; none for an image below the `manipulated`
threshold). Pixel F1 counts those masks; `pixel_f1_every_image_masked`
counts every image's map at the pixel threshold, as scans wrote before
7 Dec 2026. Each spliced row also says how it was made (resample factor,
edge blur, JPEG quality, region share), its own pixel F1, and how it
stands out in its own map whatever the threshold (splice_visibility), so that
the splices a segmenter misses can be told apart: unseen, or seen too weakly.

`--photographs heldout` builds the same archive from scikit-image's held-out
photographs instead (forensics.synthetic.HELD_OUT_PHOTOS): the check to
compare candidate checkpoints with, so that choosing one never looks at the
reserved photographs.

    python -m bench.independent_check [--count 60] [--analysis native|triage] [--output bench/results/independent_check.json]
                                      [--photographs reserved|heldout]
                                      [--classifier CKPT] [--segmenter CKPT]   # default: the shipped checkpoints
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.config import ANALYSIS_MODES, NATIVE


PHOTOGRAPH_SETS = ("reserved", "heldout")


def check_photographs(which: str) -> list[tuple[str, np.ndarray]]:
    """`reserved`: scikit-learn's and matplotlib's sample photographs; `heldout`: scikit-image's held-out split."""
    if which == "heldout":
        from forensics.synthetic import photographs_for_split

        return list(photographs_for_split("heldout"))
    if which != "reserved":
        raise ValueError(f"Wrong photograph set `{which}`, supported sets: {list(PHOTOGRAPH_SETS)}")
    return reserved_photographs()


def reserved_photographs() -> list[tuple[str, np.ndarray]]:
    import matplotlib.cbook
    import sklearn.datasets

    photos = [(name, image) for name, image in zip(("china", "flower"), sklearn.datasets.load_sample_images().images)]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos.append(("grace_hopper", np.asarray(Image.open(handle).convert("RGB"))))
    return photos


def _crop(rng, photo: np.ndarray, low: int = 256) -> np.ndarray:
    height, width = photo.shape[:2]
    crop_h = int(rng.integers(min(low, height), height + 1))
    crop_w = int(rng.integers(min(low, width), width + 1))
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    return photo[top : top + crop_h, left : left + crop_w]


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _region(rng, height: int, width: int) -> np.ndarray:
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    region_h, region_w = int(height * rng.uniform(0.15, 0.4)), int(width * rng.uniform(0.15, 0.4))
    top, left = int(rng.integers(0, height - region_h)), int(rng.integers(0, width - region_w))
    if rng.random() < 0.5:
        draw.ellipse([left, top, left + region_w, top + region_h], fill=255)
    else:
        points = [(left + rng.uniform(0, region_w), top + rng.uniform(0, region_h)) for _ in range(6)]
        draw.polygon(points, fill=255)
    return np.asarray(mask) > 127


def spliced(rng, target: np.ndarray, donor_photo: np.ndarray) -> tuple[bytes, np.ndarray, dict]:
    """A splice of a resampled donor region into `target`, JPEG-compressed once; (bytes, mask, what was done)."""
    height, width = target.shape[:2]
    factor = rng.uniform(0.6, 1.6)
    donor = _crop(rng, donor_photo, low=128)
    donor = np.asarray(Image.fromarray(donor).resize((max(8, int(donor.shape[1] * factor)), max(8, int(donor.shape[0] * factor))), Image.BICUBIC))
    from forensics.tiling import cut

    donor = cut(donor, 0, 0, height, width)  # the resampled donor at the target's size (mirrored where smaller)
    mask = _region(rng, height, width)
    alpha = mask.astype(np.float32)
    edge_blur = 0.0
    if rng.random() < 0.5:  # blurred edges
        edge_blur = float(rng.uniform(1, 3))
        alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(edge_blur)), np.float32) / 255
    image = (target * (1 - alpha[..., None]) + donor * alpha[..., None]).round().clip(0, 255).astype(np.uint8)
    quality = int(rng.integers(75, 96))
    details = {"resample_factor": round(float(factor), 3), "edge_blur": round(edge_blur, 2), "jpeg_quality": quality,
               "region_share": round(float(mask.mean()), 4)}
    return _jpeg(image, quality), mask, details


def generated(rng, image: np.ndarray) -> bytes:
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    small = np.asarray(Image.fromarray(image).resize((max(4, width // 2), max(4, height // 2)), Image.BICUBIC), np.float32)
    tensor = torch.from_numpy(small).permute(2, 0, 1)[None] / 255.0
    up = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    kernel = torch.from_numpy(rng.normal(0, 1, (3, 1, 3, 3)).astype(np.float32)).abs()
    kernel = kernel / kernel.sum(dim=(2, 3), keepdim=True)
    smooth = F.conv2d(F.pad(up, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)
    out = (smooth[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return _jpeg(out, int(rng.integers(80, 96)))


def build_archive(count: int, seed: int = 2026, photographs: str = "reserved"):
    """`count` objects, a third each: authentic, spliced (with masks), generated stand-ins."""
    rng = np.random.default_rng(seed)
    photos = check_photographs(photographs)
    objects = []
    for index in range(count):
        name, photo = photos[(index // 3) % len(photos)]  # every kind from every photograph
        base = _crop(rng, photo)
        kind = ("authentic", "spliced", "generated")[index % 3]
        details = {}
        if kind == "authentic":
            data, mask = _jpeg(np.ascontiguousarray(base), int(rng.integers(75, 96))), np.zeros(base.shape[:2], bool)
        elif kind == "spliced":
            donor = photos[(index + 1 + int(rng.integers(0, len(photos) - 1))) % len(photos)][1]
            data, mask, details = spliced(rng, np.ascontiguousarray(base), donor)
        else:
            data, mask = generated(rng, np.ascontiguousarray(base)), np.zeros(base.shape[:2], bool)
        objects.append({"name": f"{index:03d}_{kind}_{name}", "photo": name, "kind": kind, "data": data, "mask": mask,
                        "details": details})
    return objects


MISSED_F1 = 0.05  # a splice whose own pixel F1 is below this is missed
SPLICE_BINS = {  # how the check's splices are told apart: what each was made with
    "region_share": (0.0, 0.03, 0.06, 0.10, 1.0),
    "resample_factor": (0.6, 0.8, 0.95, 1.05, 1.2, 1.6),
    "edge_blur": (0.0, 0.5, 3.0),
}


def image_pixel_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """One image's own pixel F1 (a splice counts as missed below MISSED_F1)."""
    from forensics.metrics import PixelCounts

    own = PixelCounts()
    own.add(predicted, truth)
    return own.f1


def splice_visibility(probabilities: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How one splice stands out in its own P(manipulated) map, whatever the threshold: the ROC-AUC of its pixels
    against the image's untouched ones (1 = every spliced pixel above every untouched one, 0.5 = unseen), their
    mean probability, and the probability that 1 % of the untouched pixels exceed."""
    from sklearn.metrics import roc_auc_score

    return {"pixel_roc_auc": float(roc_auc_score(truth.ravel(), probabilities.ravel())),
            "mean_probability_inside": float(probabilities[truth].mean()),
            "untouched_top_1_percent_probability": float(np.quantile(probabilities[~truth], 0.99))}


VISIBILITY = ("pixel_roc_auc", "mean_probability_inside", "untouched_top_1_percent_probability")


def splice_breakdown(rows: list[dict]) -> dict:
    """For each way of making a splice (SPLICE_BINS), per bin: splices, how many are missed (own pixel F1 below
    MISSED_F1), their mean own pixel F1, and the median of each splice_visibility figure."""
    spliced = [row for row in rows if row["kind"] == "spliced"]
    breakdown = {}
    for key, edges in SPLICE_BINS.items():
        bins = {}
        for low, high in zip(edges[:-1], edges[1:]):
            members = [row for row in spliced if low <= row[key] < high or (high == edges[-1] and row[key] == high)]
            if members:
                f1 = [row["pixel_f1"] for row in members]
                bins[f"{low}-{high}"] = {"splices": len(f1), "missed": int(sum(v < MISSED_F1 for v in f1)),
                                         "mean_pixel_f1": float(np.mean(f1)),
                                         **{f"median_{name}": float(np.median([row[name] for row in members])) for name in VISIBILITY}}
        breakdown[key] = bins
    return breakdown


def ai_score(classifier, decoded) -> float:
    """The classifier's calibrated P(AI-generated) for one decoded image, from its card's view (as a scan reads it)."""
    return float(classifier.predict(classifier.view(decoded.inputs[classifier.card.input_spec])[None])[0])


def segment(segmenter, decoded) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """One decoded image through the segmenter as a scan reads it: (manipulation score, P(manipulated) at the
    original size, that map at the pixel threshold, the mask a scan writes: none below the `manipulated` threshold)."""
    from forensics.masks import gets_mask, manipulated_probabilities, upsample_probabilities

    view, _scale = segmenter.view(decoded.inputs[segmenter.card.input_spec])
    probabilities = next(segmenter.probability_maps([view]))
    score = segmenter.image_score(probabilities)
    manipulated = upsample_probabilities(manipulated_probabilities(probabilities), decoded.height, decoded.width)
    marked = manipulated >= segmenter.card.threshold("pixel")  # forensics.masks.mask_at_original_size
    written = marked if gets_mask(score, segmenter.card.threshold("manipulated")) else np.zeros_like(marked)
    return score, manipulated, marked, written


def run_check(count: int, analysis: str, classifier_checkpoint: str | None = None,
              segmenter_checkpoint: str | None = None, photographs: str = "reserved") -> tuple[dict, list]:
    from sklearn.metrics import roc_auc_score

    from forensics.checkpoint import bundled_checkpoint
    from forensics.decode import decode_image
    from forensics.inference import ClassifierPredictor, SegmenterPredictor
    from forensics.metrics import PixelCounts

    classifier = ClassifierPredictor.from_checkpoint(classifier_checkpoint or bundled_checkpoint("classifier"))
    segmenter = SegmenterPredictor.from_checkpoint(segmenter_checkpoint or bundled_checkpoint("segmenter"))
    if analysis == "triage":
        classifier.card, segmenter.card = classifier.card.for_triage(), segmenter.card.for_triage()
    threshold, manipulated_threshold = segmenter.card.threshold("pixel"), segmenter.card.threshold("manipulated")
    counts, every_image_masked, all_ones = PixelCounts(), PixelCounts(), PixelCounts()
    rows, examples, shown = [], [], set()
    for item in build_archive(count, photographs=photographs):
        decoded = decode_image(item["data"], [classifier.card.input_spec, segmenter.card.input_spec])
        ai = ai_score(classifier, decoded)
        score, manipulated, marked, predicted = segment(segmenter, decoded)  # predicted: the mask a scan writes
        if item["kind"] != "generated":
            counts.add(predicted, item["mask"])
            every_image_masked.add(marked, item["mask"])
            all_ones.add(np.ones_like(item["mask"]), item["mask"])
        row = {"name": item["name"], "kind": item["kind"], "ai_score": ai, "manipulation_score": score,
               "flagged_pixel_share": float(predicted.mean())}
        if item["kind"] == "spliced":  # how it was made, how much of it the mask finds, and how the map sees it
            row |= {"pixel_f1": image_pixel_f1(predicted, item["mask"]), **splice_visibility(manipulated, item["mask"]),
                    **item["details"]}
        rows.append(row)
        if item["kind"] != "generated" and (item["photo"], item["kind"]) not in shown:  # one of each per photograph
            shown.add((item["photo"], item["kind"]))
            picture = np.asarray(Image.open(io.BytesIO(item["data"])).convert("RGB"))
            examples.append((picture, item["mask"], manipulated, predicted))
    kinds = np.array([r["kind"] for r in rows])
    ai_scores = np.array([r["ai_score"] for r in rows])
    manipulation = np.array([r["manipulation_score"] for r in rows])
    not_generated = kinds != "generated"
    return {
        "command": "python -m bench.independent_check " + " ".join(sys.argv[1:]),
        "images": count, "analysis": analysis, "photographs": photographs,
        "models": {"classifier": classifier.card.version, "segmenter": segmenter.card.version}, "pixel_threshold": threshold,
        "manipulated_threshold": manipulated_threshold,
        "pixel_f1": counts.to_dict().get("pixel_f1"), "pixel_f1_every_image_masked": every_image_masked.to_dict().get("pixel_f1"),
        "pixel_f1_all_ones_mask": all_ones.to_dict().get("pixel_f1"),
        "authentic_flagged_pixel_share": float(np.mean([r["flagged_pixel_share"] for r in rows if r["kind"] == "authentic"])),
        "manipulation_roc_auc": float(roc_auc_score(kinds[not_generated] == "spliced", manipulation[not_generated])),
        "ai_generated_roc_auc": float(roc_auc_score(kinds == "generated", ai_scores)),
        "ai_generated_roc_auc_vs_authentic": float(roc_auc_score(kinds[kinds != "spliced"] == "generated", ai_scores[kinds != "spliced"])),
        "authentic_called_ai": int(((kinds == "authentic") & (ai_scores >= classifier.card.threshold("ai_generated"))).sum()),
        f"splices_missed_below_pixel_f1_{MISSED_F1}": int(sum(r["pixel_f1"] < MISSED_F1 for r in rows if r["kind"] == "spliced")),
        "splice_breakdown": splice_breakdown(rows),
        "rows": rows,
    }, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--analysis", choices=ANALYSIS_MODES, default=NATIVE)
    parser.add_argument("--output", type=Path, default=Path("bench/results/independent_check.json"))
    parser.add_argument("--photographs", choices=PHOTOGRAPH_SETS, default="reserved",
                        help="reserved: the independent check; heldout: the same procedures on scikit-image's held-out "
                             "photographs, for choosing between checkpoints")
    parser.add_argument("--classifier", help="classifier checkpoint (default: the shipped one)")
    parser.add_argument("--segmenter", help="segmenter checkpoint (default: the shipped one)")
    args = parser.parse_args()
    result, examples = run_check(args.count, args.analysis, args.classifier, args.segmenter, args.photographs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    from forensics.metrics import plot_mask_examples

    plot_mask_examples(examples, args.output.with_suffix(".jpg"), result["pixel_threshold"],
                       f"{result['models']['segmenter']}: an authentic and a spliced image of each photograph")
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "splice_breakdown")}, indent=2))


if __name__ == "__main__":
    main()
