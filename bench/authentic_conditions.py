"""Which everyday photographic conditions make the models call an untouched photograph manipulated or AI-generated.

No edit is made here: every image is an authentic crop of scikit-image's
held-out photographs (forensics.synthetic.HELD_OUT_PHOTOS), shot through one
condition a camera, a phone or a web publisher applies to the whole frame
(JPEG quality, resizing, sharpening, sensor noise, noise reduction, a
defocused background, a tone curve, vignetting) and saved as a camera JPEG.
The same crops go through every condition, so a change in the scores is the
condition's doing. Each image goes through the scan's forensics path
(decode_image, the cards' native views, stitched tiles, calibrated scores),
as in bench.independent_check.

For each condition it reports how many of the authentic images reach the
segmenter's `manipulated` threshold, their manipulation scores, the share of
their pixels a scan would mark, and how many the classifier calls
AI-generated. A condition that lifts these is one the training data does
not show as authentic. It reports; it never asserts. Beside the JSON it
draws the scores per condition against the threshold and, for one crop, the
image and P(manipulated) under each condition (same name, `.png`).
The reserved photographs of bench.independent_check are never used here.

    python -m bench.authentic_conditions [--crops 10] [--output bench/results/authentic_conditions.json]
                                         [--classifier CKPT] [--segmenter CKPT]   # default: the shipped checkpoints
                                         [--models both|classifier|segmenter]     # a classifier alone takes minutes
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

CAMERA_JPEG_QUALITY = 90  # how every condition but the JPEG ones is saved


def _camera_jpeg(image: np.ndarray, quality: int = CAMERA_JPEG_QUALITY) -> bytes:
    from bench.independent_check import _jpeg

    return _jpeg(image, quality)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _resized(image: np.ndarray, factor: float, method) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, method))


def _noisy(image: np.ndarray, sigma: float, rng) -> np.ndarray:
    return (image + rng.normal(0, sigma, image.shape)).round().clip(0, 255).astype(np.uint8)


def _filtered(image: np.ndarray, image_filter) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(image_filter))


def _defocused_background(image: np.ndarray, radius: float) -> np.ndarray:
    """A sharp subject (an ellipse around the centre) before a background blurred by `radius`, blended smoothly."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    distance = np.hypot((ys - height / 2) / (0.3 * height), (xs - width / 2) / (0.3 * width))
    weight = np.clip(distance - 1.0, 0.0, 1.0)[..., None]  # 0 in the subject, rising to 1 over as much again
    blurred = _filtered(image, ImageFilter.GaussianBlur(radius)).astype(np.float32)
    return (image * (1 - weight) + blurred * weight).round().clip(0, 255).astype(np.uint8)


def _vignetted(image: np.ndarray, strength: float) -> np.ndarray:
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    radius = np.hypot((ys - height / 2) / (height / 2), (xs - width / 2) / (width / 2)) / np.sqrt(2)
    return (image * (1 - strength * radius**2)[..., None]).round().clip(0, 255).astype(np.uint8)


def _tone_curve(image: np.ndarray, gamma: float, contrast: float) -> np.ndarray:
    scaled = (image / 255.0) ** gamma
    return ((0.5 + contrast * (scaled - 0.5)) * 255).round().clip(0, 255).astype(np.uint8)


# name -> (what it stands for, how the image is made from the crop)
CONDITIONS: dict[str, tuple[str, Callable[[np.ndarray, np.random.Generator], bytes]]] = {
    "png": ("the crop saved losslessly", lambda image, rng: _png(image)),
    "camera_jpeg": (f"JPEG quality {CAMERA_JPEG_QUALITY}, the baseline of the rows below",
                    lambda image, rng: _camera_jpeg(image)),
    "jpeg_70": ("a web JPEG, quality 70", lambda image, rng: _camera_jpeg(image, 70)),
    "jpeg_50": ("a heavily compressed JPEG, quality 50", lambda image, rng: _camera_jpeg(image, 50)),
    "recompressed": ("JPEG quality 75, then saved again at quality 90",
                     lambda image, rng: _camera_jpeg(np.asarray(Image.open(io.BytesIO(_camera_jpeg(image, 75))).convert("RGB")))),
    "downscaled": ("halved with Lanczos, as a web publisher does",
                   lambda image, rng: _camera_jpeg(_resized(image, 0.5, Image.LANCZOS))),
    "upscaled": ("enlarged 1.5x with bicubic interpolation",
                 lambda image, rng: _camera_jpeg(_resized(image, 1.5, Image.BICUBIC))),
    "sharpened": ("an unsharp mask (radius 2, 150 %), a phone's default",
                  lambda image, rng: _camera_jpeg(_filtered(image, ImageFilter.UnsharpMask(2, 150, 2)))),
    "sensor_noise": ("high-ISO sensor noise, standard deviation 6",
                     lambda image, rng: _camera_jpeg(_noisy(image, 6.0, rng))),
    "noise_reduction": ("a 3x3 median filter, as phone noise reduction smooths",
                        lambda image, rng: _camera_jpeg(_filtered(image, ImageFilter.MedianFilter(3)))),
    "soft_focus": ("the whole frame slightly out of focus (Gaussian blur 1.5 px)",
                   lambda image, rng: _camera_jpeg(_filtered(image, ImageFilter.GaussianBlur(1.5)))),
    "defocused_background": ("a sharp centre before a background blurred by 4 px",
                             lambda image, rng: _camera_jpeg(_defocused_background(image, 4.0))),
    "tone_curve": ("gamma 0.7 and 1.3x contrast", lambda image, rng: _camera_jpeg(_tone_curve(image, 0.7, 1.3))),
    "vignetting": ("corners darkened by 40 %", lambda image, rng: _camera_jpeg(_vignetted(image, 0.4))),
    "low_light": ("exposure 0.4x, noise 4, then JPEG",
                  lambda image, rng: _camera_jpeg(_noisy((image * 0.4).astype(np.uint8), 4.0, rng))),
}


def authentic_crops(count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """`count` crops of the held-out photographs, taken in turn from each (as bench.independent_check crops)."""
    from bench.independent_check import _crop, check_photographs

    rng = np.random.default_rng(seed)
    photos = check_photographs("heldout")
    crops = []
    for index in range(count):
        name, photo = photos[index % len(photos)]
        crops.append((f"{index:03d}_{name}", np.ascontiguousarray(_crop(rng, photo))))
    return crops


MODELS = ("both", "classifier", "segmenter")


def run_conditions(crops: int, seed: int = 2026, classifier_checkpoint: str | None = None,
                   segmenter_checkpoint: str | None = None, models: str = "both") -> tuple[dict, list]:
    from forensics.checkpoint import bundled_checkpoint
    from forensics.decode import decode_image
    from forensics.inference import ClassifierPredictor, SegmenterPredictor

    from bench.independent_check import ai_score, segment

    classifier = segmenter = None
    if models in ("both", "classifier"):
        classifier = ClassifierPredictor.from_checkpoint(classifier_checkpoint or bundled_checkpoint("classifier"))
    if models in ("both", "segmenter"):
        segmenter = SegmenterPredictor.from_checkpoint(segmenter_checkpoint or bundled_checkpoint("segmenter"))
    specs = [model.card.input_spec for model in (classifier, segmenter) if model is not None]
    images = authentic_crops(crops, seed)
    summary, examples = {}, []
    for condition, (meaning, make) in CONDITIONS.items():
        rng = np.random.default_rng(seed)  # the same noise draws for every condition
        rows, started = [], time.perf_counter()
        for name, crop in images:
            data = make(crop, rng)
            decoded = decode_image(data, specs)
            row = {"name": name}
            if classifier is not None:
                row["ai_score"] = ai_score(classifier, decoded)
            if segmenter is not None:
                score, manipulated, _marked, written = segment(segmenter, decoded)
                row |= {"manipulation_score": score, "marked_pixel_share": float(written.mean())}
                if name == images[0][0]:
                    examples.append((condition, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), manipulated))
            rows.append(row)
        summary[condition] = {"condition": meaning, "images": len(rows), **condition_figures(rows, classifier, segmenter),
                              "seconds": round(time.perf_counter() - started, 1), "rows": rows}
        print(f"{condition:22s} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in summary[condition].items() if k not in ("condition", "rows")),
              file=sys.stderr, flush=True)
    return {
        "command": "python -m bench.authentic_conditions " + " ".join(sys.argv[1:]),
        "crops": crops, "seed": seed, "photographs": "heldout",
        "models": {name: model.card.version for name, model in (("classifier", classifier), ("segmenter", segmenter)) if model},
        **({"ai_generated_threshold": classifier.card.threshold("ai_generated")} if classifier else {}),
        **({"manipulated_threshold": segmenter.card.threshold("manipulated"),
            "pixel_threshold": segmenter.card.threshold("pixel")} if segmenter else {}),
        "conditions": summary,
    }, examples


def condition_figures(rows: list[dict], classifier, segmenter) -> dict:
    """How many of one condition's authentic images each model calls edited, and their median scores."""
    figures = {}
    if segmenter is not None:
        scores = np.array([r["manipulation_score"] for r in rows])
        figures |= {"called_manipulated": int((scores >= segmenter.card.threshold("manipulated")).sum()),
                    "median_manipulation_score": float(np.median(scores)),
                    "marked_pixel_share": float(np.mean([r["marked_pixel_share"] for r in rows]))}
    if classifier is not None:
        ai_scores = np.array([r["ai_score"] for r in rows])
        figures |= {"called_ai_generated": int((ai_scores >= classifier.card.threshold("ai_generated")).sum()),
                    "median_ai_score": float(np.median(ai_scores))}
    return figures


def plot_conditions(result: dict, examples: list, path: Path) -> Path:
    """Both models' scores per condition against their thresholds, and one crop's P(manipulated) under each condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(result["conditions"])
    panels = [panel for panel in (("manipulation_score", "manipulated_threshold", "called_manipulated", "segmenter: manipulation score"),
                                  ("ai_score", "ai_generated_threshold", "called_ai_generated", "classifier: P(AI-generated)"))
              if panel[1] in result]
    columns = max(len(examples), 1)
    figure = plt.figure(figsize=(max(12, 1.3 * columns), 4.5 * len(panels) + (4 if examples else 0)))
    grid = figure.add_gridspec(len(panels) + (2 if examples else 0), columns,
                               height_ratios=(2,) * len(panels) + ((1, 1) if examples else ()))
    for row, (key, threshold_key, called, label) in enumerate(panels):
        axis = figure.add_subplot(grid[row, :])
        values = [[r[key] for r in result["conditions"][c]["rows"]] for c in conditions]
        axis.boxplot(values, showfliers=False)
        for position, column in enumerate(values, start=1):
            axis.scatter(position + np.linspace(-0.2, 0.2, len(column)), column, s=8, alpha=0.6)
        threshold = result[threshold_key]
        axis.axhline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3f}")
        axis.set_xticks(range(1, len(conditions) + 1),
                        [f"{c} ({result['conditions'][c][called]}/{result['conditions'][c]['images']})" for c in conditions],
                        rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(label)
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"Authentic crops of the held-out photographs under each condition: {', '.join(result['models'].values())} "
                    "(in brackets: how many reach the threshold)", fontsize=9)
    for column, (condition, picture, probabilities) in enumerate(examples):
        top, bottom = figure.add_subplot(grid[len(panels), column]), figure.add_subplot(grid[len(panels) + 1, column])
        top.imshow(picture)
        bottom.imshow(probabilities, vmin=0, vmax=1, cmap="magma")
        top.set_title(condition, fontsize=7)
        for axis in (top, bottom):
            axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=10, help="authentic crops per condition (the same crops for each)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", type=Path, default=Path("bench/results/authentic_conditions.json"))
    parser.add_argument("--classifier", help="classifier checkpoint (default: the shipped one)")
    parser.add_argument("--segmenter", help="segmenter checkpoint (default: the shipped one)")
    parser.add_argument("--models", choices=MODELS, default="both", help="which models to run (default %(default)s)")
    args = parser.parse_args()
    result, examples = run_conditions(args.crops, args.seed, args.classifier, args.segmenter, args.models)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    plot_conditions(result, examples, args.output.with_suffix(".png"))
    print(json.dumps({name: {k: v for k, v in figures.items() if k != "rows"} for name, figures in result["conditions"].items()}, indent=2))


if __name__ == "__main__":
    main()
