"""Model outputs on a labelled set, preprocessed exactly as the scanner does (forensics.decode, forensics.tiling).

Shared by `forgescan evaluate` and `forgescan calibrate`: raw logits (before
temperature) for the classifier, and for the segmenter exact pixel counts at
the original image resolution plus the samples calibration needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from forensics.calibration import EVALUATION_BATCH_SIZE, sigmoid
from forensics.decode import decode_image
from forensics import inference
from forensics.inference import ModelPredictor
from forensics.tiling import classifier_view, segmenter_view
from forensics.masks import TOP_FRACTION, class_index_map, class_probabilities, gets_mask, manipulation_logits, manipulation_score, upsample_probabilities
from forensics.metrics import PixelCounts
from forensics.training.datasets import ImageMaskPair, LabelledImage, load_class_mask, read_sample_bytes
from forensics.training.loops import PIXEL_SAMPLE_PER_IMAGE


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode(data: bytes, name: str, card) -> tuple[np.ndarray, tuple[int, int]]:
    """decode_image's output for `card` (resized, centre crop, or the native image) and the original (height, width)."""
    from forensics.decode import ImageDecodeError
    from forensics.training.datasets import DatasetError

    try:
        decoded = decode_image(data, [card.input_spec])
    except ImageDecodeError as error:
        raise DatasetError(f"Cannot decode image {name}: {error}. Remove or replace the file.") from None
    return decoded.inputs[card.input_spec], (decoded.height, decoded.width)


def classifier_logits(predictor: ModelPredictor, samples: list[LabelledImage],
                      batch_size: int = EVALUATION_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits (no temperature) and labels for every sample."""
    from tqdm.auto import tqdm

    logits, labels = [], []
    for batch in tqdm(list(_batches(samples, batch_size)), desc=f"classifier {predictor.version}", mininterval=2.0):
        views = np.stack([classifier_view(predictor.card, _decode(read_sample_bytes(s), s.uri, predictor.card)[0]) for s in batch])
        logits.append(inference.classifier_logits(predictor, views))
        labels += [s.label for s in batch]
    return np.concatenate(logits).astype(np.float64), np.array(labels, dtype=int)


@dataclass
class SegmenterOutputs:
    """What one pass of the segmenter over a labelled set leaves behind."""

    # Pixel counts of every image's map at the card's pixel threshold, pooled and per image (per-family figures);
    # as_written() gives the counts of the masks a scan writes, none for an image below the `manipulated` threshold.
    pixel_counts: PixelCounts = field(default_factory=PixelCounts)
    image_counts: list[PixelCounts] = field(default_factory=list)
    pixel_logits: list[np.ndarray] = field(default_factory=list)  # uniform sample per image, model resolution
    pixel_labels: list[np.ndarray] = field(default_factory=list)
    top_logits: list[np.ndarray] = field(default_factory=list)  # top 1% logits per image -> manipulation score
    has_mask: list[bool] = field(default_factory=list)
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # image, truth, probability
    # Multi-class: (C, C) pixel counts at original size, rows true class, columns the scan's class
    # (forensics.masks.class_index_map at the card's pixel threshold), pooled and per image; None for a binary segmenter.
    class_confusion: np.ndarray | None = None
    image_class_confusion: list[np.ndarray] = field(default_factory=list)

    def as_written(self, scores: np.ndarray, manipulated_threshold: float) -> "SegmenterOutputs":
        """The same outputs with the pixel and class counts of the masks a scan writes (pipeline.stages.assemble_rows):
        an image whose manipulation score is below `manipulated_threshold` gets no mask, so none of its pixels is marked."""
        flagged = gets_mask(np.asarray(scores), manipulated_threshold)
        counts = [own if keep else own.unmarked() for own, keep in zip(self.image_counts, flagged)]
        written = dataclasses.replace(self, pixel_counts=sum(counts, PixelCounts()), image_counts=counts)
        if self.class_confusion is not None:
            written.image_class_confusion = [own if keep else _all_authentic(own) for own, keep in zip(self.image_class_confusion, flagged)]
            written.class_confusion = sum(written.image_class_confusion, np.zeros_like(self.class_confusion))
        return written

    def authentic_samples(self) -> np.ndarray:
        """Per pixel sample (concatenated as pixel_logits): True where its image has nothing manipulated, the
        samples forensics.calibration.pixel_threshold counts as false alarms on authentic photographs."""
        return np.concatenate([np.full(len(samples), not manipulated)
                               for samples, manipulated in zip(self.pixel_logits, self.has_mask)])

    def manipulation_scores(self, temperature: float, score_calibration: dict | None = None) -> np.ndarray:
        """Image-level scores as the scan computes them: the raw top-1% mean of the pixel map, then the
        card's Platt scaling when `score_calibration` is given (SegmenterPredictor.image_score)."""
        from forensics.calibration import platt

        raw = np.array([manipulation_score(sigmoid(row, temperature), top_fraction=1.0) for row in self.top_logits])
        if not score_calibration:
            return raw
        return platt(raw, score_calibration["slope"], score_calibration["intercept"])


def _all_authentic(confusion: np.ndarray) -> np.ndarray:
    """A (C, C) confusion matrix with every pixel predicted as class 0 (authentic): an image without a mask."""
    unmarked = np.zeros_like(confusion)
    unmarked[:, 0] = confusion.sum(axis=1)
    return unmarked


def segmenter_outputs(
    predictor: ModelPredictor, pairs: list[ImageMaskPair], batch_size: int = EVALUATION_BATCH_SIZE, seed: int = 0,
    keep_examples: int = 6
) -> SegmenterOutputs:
    """Run the segmenter; pixel counts use the card's temperature and pixel threshold at ORIGINAL resolution."""
    import fsspec
    from tqdm.auto import tqdm

    card = predictor.card
    threshold = card.threshold("pixel")
    rng = np.random.default_rng(seed)
    outputs = SegmenterOutputs()
    num_classes = len(card.class_names) if card.is_multiclass else None
    if num_classes:
        outputs.class_confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for batch in tqdm(list(_batches(pairs, batch_size)), desc=f"segmenter {predictor.version}", mininterval=2.0):
        decoded, truths = [], []
        for pair in batch:
            with fsspec.open(pair.image_uri, "rb") as handle:
                pixels, (height, width) = _decode(handle.read(), pair.image_uri, card)
            decoded.append(segmenter_view(card, pixels)[0])
            truths.append(load_class_mask(pair.mask_uri, (width, height), num_classes) if pair.mask_uri
                          else np.zeros((height, width), np.uint8))
        logits = inference.segmenter_logit_maps(predictor, decoded, tiles_per_batch=batch_size, class_maps=True)
        for pixels, true_classes, class_logits in zip(decoded, truths, logits):
            truth = true_classes > 0
            if num_classes:
                predicted_classes = class_index_map(class_probabilities(class_logits, card.temperature), *truth.shape, threshold)
                own = np.bincount(true_classes.ravel().astype(np.int64) * num_classes + predicted_classes.ravel(),
                                  minlength=num_classes * num_classes).reshape(num_classes, num_classes)
                outputs.class_confusion += own
                outputs.image_class_confusion.append(own)
                image_logits = manipulation_logits(class_logits)
            else:
                image_logits = class_logits[0]
            probabilities = sigmoid(image_logits, card.temperature).astype(np.float32)
            full = upsample_probabilities(probabilities, *truth.shape)
            outputs.pixel_counts.add(full >= threshold, truth)
            outputs.image_counts.append(PixelCounts())
            outputs.image_counts[-1].add(full >= threshold, truth)
            small_truth = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize(image_logits.shape[::-1], Image.NEAREST)) > 127
            flat = image_logits.ravel()
            chosen = rng.choice(flat.size, size=min(PIXEL_SAMPLE_PER_IMAGE, flat.size), replace=False)
            outputs.pixel_logits.append(flat[chosen])
            outputs.pixel_labels.append(small_truth.ravel()[chosen])
            k = max(1, int(round(flat.size * TOP_FRACTION)))
            outputs.top_logits.append(np.partition(flat, flat.size - k)[flat.size - k :])
            outputs.has_mask.append(bool(truth.any()))
            if len(outputs.examples) < keep_examples and truth.any():
                outputs.examples.append((pixels, small_truth, probabilities))
    return outputs


# --- the evaluation protocol: per family, leave-one-family-out, calibration on a disjoint split ----------


def per_family_metrics(labels: np.ndarray, scores: np.ndarray, families: list[str | None], threshold: float) -> list[dict]:
    """For every generator family in the set: its fakes against ALL real images (ROC-AUC), and the share of its
    fakes called AI-generated at `threshold` (detection rate). Fakes without a family are grouped as `unknown`."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    names = np.array([family or "unknown" for family in families], dtype=object)
    real = labels == 0
    rows = []
    for family in sorted(set(names[labels == 1])):
        fake = (labels == 1) & (names == family)
        chosen = real | fake
        rows.append({"family": family, "fakes": int(fake.sum()), "reals": int(real.sum()),
                     "roc_auc": float(roc_auc_score(labels[chosen], scores[chosen])) if real.any() else None,
                     "detection_rate": float((scores[fake] >= threshold).mean())})
    return rows


def segmenter_family_metrics(
    outputs: SegmenterOutputs, families: list[tuple[str, ...]], scores: np.ndarray, threshold: float
) -> list[dict]:
    """For every manipulation family in the set: pixel F1 / IoU over the images that carry it (the union
    "manipulated" mask, at original size), their image-level ROC-AUC against ALL authentic images, and the
    share of them called manipulated at `threshold` (beside the share of authentic images called manipulated,
    so that detection rates at different models' thresholds can be read together)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    authentic = np.array([not applied for applied in families])
    rows = []
    for family in sorted({family for applied in families for family in applied}):
        carries = np.array([family in applied for applied in families])
        counts = sum((outputs.image_counts[index] for index in np.nonzero(carries)[0]), PixelCounts())
        chosen = authentic | carries
        rows.append({"family": family, "images": int(carries.sum()), "authentic_images": int(authentic.sum()),
                     "pixel_f1": counts.f1, "pixel_iou": counts.iou,
                     "roc_auc": float(roc_auc_score(carries[chosen], scores[chosen])) if authentic.any() else None,
                     "detection_rate": float((scores[carries] >= threshold).mean()),
                     "authentic_false_positive_rate": float((scores[authentic] >= threshold).mean()) if authentic.any() else None})
    return rows


def fit_calibration(logits: np.ndarray, labels: np.ndarray, target_fpr: float) -> tuple[float, float]:
    """(temperature, ai_generated threshold) fitted on calibration logits, as `forgescan calibrate` fits them."""
    from forensics.calibration import decision_threshold, fit_temperature

    temperature = fit_temperature(logits, labels)
    return temperature, decision_threshold(sigmoid(logits, temperature), labels, target_fpr)


def check_disjoint(test: list[LabelledImage], other: list[LabelledImage], test_root: str, other_root: str, role: str) -> None:
    """Refuse a `role` split (calibration) that shares an image, or a source photograph, with the test split.

    Images are compared by the sha256 of their bytes; photographs by the `photo` column of the
    `samples.csv` that `forgescan make-dataset real-fake` writes, when both splits have one.
    """
    import hashlib

    from forensics.training.datasets import DatasetError

    def digests(samples):
        return {hashlib.sha256(read_sample_bytes(s)).hexdigest() for s in samples}

    shared = digests(test) & digests(other)
    if shared:
        raise DatasetError(f"The {role} set {other_root} shares {len(shared)} images with the test set {test_root}; "
                           f"fit the {role} on a split disjoint from the one you test on.")
    test_photos, other_photos = source_photographs(test_root), source_photographs(other_root)
    if test_photos and other_photos and test_photos & other_photos:
        raise DatasetError(f"The {role} set {other_root} and the test set {test_root} are cut from the same photographs "
                           f"{sorted(test_photos & other_photos)}; make them with different `--split`s "
                           "(forgescan make-dataset real-fake --split calibration / heldout).")


def source_photographs(root: str) -> set[str]:
    """The source photographs named in a dataset's samples.csv (empty when it has none)."""
    import csv
    from pathlib import Path

    from forensics.synthetic import SAMPLES_FILE

    path = Path(str(root)) / SAMPLES_FILE
    if "://" in str(root) or not path.is_file():
        return set()
    with open(path, newline="") as handle:
        return {row["photo"] for row in csv.DictReader(handle) if row.get("photo")}
