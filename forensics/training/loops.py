"""The training loop both models share: data, loss, schedule, validation and the best epoch.

Pure PyTorch: the caller passes the worker's rank, device, a function that wraps
the model for data-parallel training and a function that reports metrics, so the
same loop runs under Ray Train on N GPU workers, on one CPU worker, or in a test.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from forensics.calibration import (DEFAULT_TARGET_FPR, DEFAULT_TARGET_PIXEL_FPR, check_target_pixel_fpr, decision_threshold,
                                   fit_temperature, pixel_threshold, sigmoid)
from forensics.masks import TOP_FRACTION, manipulation_score
from forensics.metrics import PixelCounts, class_metrics, classification_metrics
from forensics.model_card import CLASSIFIER, ModelCard
from forensics.models import build_model
from forensics.training.augment import AugmentConfig, augment
from forensics.training.datasets import ImageMaskPair, LabelledImage, load_class_mask, open_rgb, read_sample_bytes

PIXEL_SAMPLE_PER_IMAGE = 4096


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and data settings of one training run (one place for the defaults)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.1
    gradient_clip: float = 1.0
    dice_weight: float = 1.0
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    loader_workers: int = 0
    target_fpr: float = DEFAULT_TARGET_FPR
    target_pixel_fpr: float = DEFAULT_TARGET_PIXEL_FPR  # segmenter: share of authentic pixels the pixel threshold may mark
    backbone_weights: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        check_target_pixel_fpr(self.target_pixel_fpr)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSettings":
        data = dict(data)
        data["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.get("augment", {}).items()})
        return cls(**data)


@dataclass(frozen=True)
class WorkerContext:
    """Where this copy of the loop runs: its rank among `world_size` workers and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    wrap_model: Callable[[nn.Module], nn.Module] = lambda model: model
    show_progress: bool = True

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    """What the chief worker keeps: the best weights, the calibrated card, history, validation outputs."""

    model: nn.Module
    card: ModelCard
    history: list[dict[str, Any]]
    validation: dict[str, np.ndarray]


# --- torch datasets ----------------------------------------------------------------------------------


class _EpochSeeded(Dataset):
    def __init__(self, samples, card: ModelCard, augment_config: AugmentConfig, seed: int, training: bool):
        self.samples = list(samples)
        self.input_size = tuple(card.input_size)
        self.resize_mode = card.resize_mode
        self.num_classes = len(card.class_names) if card.is_multiclass else None
        self.augment_config = augment_config
        self.seed = seed
        self.training = training
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class ClassifierImages(_EpochSeeded):
    """(uint8 HWC pixels, label) pairs; labels are real = 0, fake = 1."""

    def __getitem__(self, index: int):
        sample: LabelledImage = self.samples[index]
        image = open_rgb(read_sample_bytes(sample), sample.uri if sample.row is None else f"{sample.uri}#row={sample.row}")
        pixels, _ = augment(self.rng(index), image, self.input_size, self.augment_config,
                            resize_mode=self.resize_mode, random_crop=self.training)
        return torch.from_numpy(pixels.copy()), torch.tensor(float(sample.label))


class SegmentationPairs(_EpochSeeded):
    """(uint8 HWC pixels, HW mask) pairs: a bool mask for a binary card, int64 class ids for a multi-class
    one (class-indexed or binary mask files, forensics.training.datasets.load_class_mask); the mask is
    resized (nearest) to its image first."""

    def __getitem__(self, index: int):
        sample: ImageMaskPair = self.samples[index]
        with fsspec.open(sample.image_uri, "rb") as handle:
            image = open_rgb(handle.read(), sample.image_uri)
        if sample.mask_uri:
            mask = load_class_mask(sample.mask_uri, image.size, self.num_classes)
        else:
            mask = np.zeros(image.size[::-1], np.uint8)
        if self.num_classes is None:
            mask = mask > 0
        pixels, mask = augment(self.rng(index), image, self.input_size, self.augment_config, mask=mask,
                               resize_mode=self.resize_mode, random_crop=self.training)
        mask = torch.from_numpy(mask.copy())
        return torch.from_numpy(pixels.copy()), mask if self.num_classes is None else mask.long()


# --- pieces of the loop ------------------------------------------------------------------------------


def normalise(pixels: torch.Tensor, card: ModelCard, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), channels-last, on `device` (as at inference)."""
    batch = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(card.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(card.std, device=device).view(1, 3, 1, 1)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over the first steps, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def segmentation_loss(card: ModelCard, dice_weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The segmenter's loss from segmentation-models-pytorch: cross-entropy + `dice_weight` x Dice over the
    card's classes (multi-class: logits (N, C, H, W), class-id targets (N, H, W)), or binary cross-entropy
    + Dice on the single channel (binary: float targets (N, H, W))."""
    from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss, SoftCrossEntropyLoss

    if card.is_multiclass:
        cross_entropy, dice = SoftCrossEntropyLoss(smooth_factor=0.0), DiceLoss(mode="multiclass", from_logits=True)
        return lambda logits, targets: cross_entropy(logits, targets) + dice_weight * dice(logits, targets)
    cross_entropy, dice = SoftBCEWithLogitsLoss(), DiceLoss(mode="binary", from_logits=True)
    return lambda logits, targets: cross_entropy(logits[:, 0], targets) + dice_weight * dice(logits[:, 0], targets)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    import contextlib

    return contextlib.nullcontext()


def gather(array: np.ndarray) -> np.ndarray:
    """Concatenate an array from every worker (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return array
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def _progress(iterable, context: WorkerContext, description: str, total: int):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, total=total, disable=not (context.is_chief and context.show_progress),
                mininterval=2.0, leave=False, dynamic_ncols=True)


# --- the loop ----------------------------------------------------------------------------------------


def train_model(
    card: ModelCard,
    train_samples: list,
    valid_samples: list,
    settings: TrainSettings,
    context: WorkerContext = WorkerContext(),
    report: Callable[[dict[str, Any]], None] = lambda metrics: None,
    description: str = "",
) -> TrainResult | None:
    """Train `card`'s architecture; returns the best epoch's calibrated result on the chief, None elsewhere.

    Every worker calls `report` once per epoch with the same metrics, so a
    framework that treats reporting as a barrier (Ray Train) stays in step.
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    is_classifier = card.kind == CLASSIFIER
    dataset_type = ClassifierImages if is_classifier else SegmentationPairs
    train_data = dataset_type(train_samples, card, settings.augment, settings.seed, training=True)
    valid_data = dataset_type(valid_samples[context.rank :: context.world_size], card, AugmentConfig.none(), settings.seed,
                              training=False)
    sampler = None
    if context.world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_data, num_replicas=context.world_size, rank=context.rank, seed=settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    train_loader = DataLoader(train_data, batch_size=settings.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=len(train_data) > settings.batch_size, num_workers=settings.loader_workers,
                              generator=generator, pin_memory=context.device.type == "cuda")
    valid_loader = DataLoader(valid_data, batch_size=settings.batch_size, num_workers=settings.loader_workers)

    model = build_model(card, backbone_weights=settings.backbone_weights)
    if is_classifier:
        start_at_even_odds(model)
    model = model.to(context.device)
    model = context.wrap_model(model.to(memory_format=torch.channels_last))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    total_steps = max(1, settings.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, settings.warmup_fraction))

    if is_classifier:
        def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits.reshape(-1), targets)
    else:
        loss_of = segmentation_loss(card, settings.dice_weight)
    target_type = torch.long if card.is_multiclass else torch.float32

    history: list[dict[str, Any]] = []
    best_key, best_state, best_validation = None, None, None
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        train_data.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        loss_sum, seen = 0.0, 0
        bar = _progress(train_loader, context, f"{description} epoch {epoch}/{settings.epochs}".strip(), len(train_loader))
        for pixels, targets in bar:
            inputs = normalise(pixels, card, context.device)
            targets = targets.to(context.device).to(target_type)
            with _autocast(context.device):
                logits = model(inputs)
            loss = loss_of(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(pixels)
            seen += len(pixels)
            bar.set_postfix(loss=f"{loss_sum / max(1, seen):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        validation = _validate(model, valid_loader, card, context, loss_of, is_classifier, settings.seed + epoch)
        row = {"epoch": epoch, "train_loss": loss_sum / max(1, seen), "seconds": time.perf_counter() - started}
        row.update(_epoch_metrics(validation, is_classifier, card.class_names))
        history.append(row)
        report(row)
        key = _selection_key(row, is_classifier)
        if context.is_chief and (best_key is None or key > best_key):
            best_key, best_validation = key, validation
            best_state = copy.deepcopy(_unwrap(model).state_dict())
    if not context.is_chief:
        return None
    best_model = build_model(card)
    best_model.load_state_dict(best_state)
    best_epoch = max(history, key=lambda r: _selection_key(r, is_classifier))
    calibrated = calibrate_card(card, best_validation, settings.target_fpr, settings.target_pixel_fpr)
    # Wall-clock seconds stay in the history (history.json), out of the card: a card is reproducible, a timing is not.
    metrics = {"best_epoch": best_epoch["epoch"], "validation_at_best_epoch": {k: v for k, v in best_epoch.items() if k != "seconds"}}
    metrics.update(_calibrated_metrics(calibrated, best_validation))
    return TrainResult(best_model, calibrated.replace(metrics=metrics), history, best_validation)


def start_at_even_odds(model: nn.Module) -> None:
    """Zero the classifier's head so training starts at logit 0 (P = 0.5) for every image.

    timm initialises a one-output head uniformly in [-1, 1] (1/sqrt(fan_out)), which over 1,280 pooled
    features gives starting logits of about +-20: the first epochs are then spent unlearning confident
    wrong answers (a training loss above 2 where a constant guess scores 0.69).
    """
    head = model.get_classifier()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)


def _selection_key(row: dict[str, Any], is_classifier: bool) -> tuple:
    """Best epoch: classifier ROC-AUC; segmenter mean IoU over its classes (multi-class) or pixel F1 (binary)."""
    if is_classifier:
        return (row["roc_auc"] or 0.0, -row["valid_loss"])
    return (row.get("mean_iou", row["pixel_f1"]), -row["valid_loss"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.inference_mode()
def _validate(model, loader, card, context, loss_of, is_classifier: bool, seed: int) -> dict[str, np.ndarray]:
    """Validation outputs gathered from all workers.

    Classifier: every logit and label. Segmenter: exact pixel counts at 0.5, a
    uniform sample of pixel logits (for temperature and the pixel threshold),
    each image's top-1% logits (its manipulation score at any temperature) and
    whether the image has any manipulated pixel; all of it on the "manipulated" logit
    (forensics.inference.manipulation_channel). A multi-class segmenter adds per-class
    pixel stats (smp.metrics, argmax over all classes) and the class confusion matrix.
    """
    from forensics.inference import manipulation_channel

    num_classes = len(card.class_names) if card.is_multiclass else 0
    class_stats = np.zeros((4, num_classes), dtype=np.int64)  # tp, fp, fn, tn per class
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: true class, columns: predicted
    model.eval()
    rng = np.random.default_rng(seed)
    loss_sum, count = 0.0, 0
    logits_out, labels_out, top_logits, has_mask, from_authentic = [], [], [], [], []
    counts = np.zeros(4, dtype=np.int64)  # tp, fp, fn, tn at probability 0.5
    for pixels, targets in loader:
        with _autocast(context.device):
            logits = model(normalise(pixels, card, context.device))
        logits = logits.float()
        targets = targets.to(context.device).to(torch.long if num_classes else torch.float32)
        loss_sum += float(loss_of(logits, targets)) * len(pixels)
        count += len(pixels)
        if is_classifier:
            logits_out.append(logits.reshape(-1).cpu().numpy())
            labels_out.append(targets.cpu().numpy())
            continue
        if num_classes:
            import segmentation_models_pytorch as smp

            predicted_classes = logits.argmax(dim=1)
            stats = smp.metrics.get_stats(predicted_classes, targets, mode="multiclass", num_classes=num_classes)
            class_stats += np.stack([s.sum(0).cpu().numpy() for s in stats])
            confusion += np.bincount((targets * num_classes + predicted_classes).reshape(-1).cpu().numpy(),
                                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)
        maps, truth = manipulation_channel(card, logits).cpu().numpy(), targets.cpu().numpy() > 0
        predicted = maps >= 0
        counts += [np.sum(predicted & truth), np.sum(predicted & ~truth), np.sum(~predicted & truth), np.sum(~predicted & ~truth)]
        flat_maps, flat_truth = maps.reshape(len(maps), -1), truth.reshape(len(truth), -1)
        k = max(1, int(round(flat_maps.shape[1] * TOP_FRACTION)))
        for image_logits, image_truth in zip(flat_maps, flat_truth):
            chosen = rng.choice(image_logits.size, size=min(PIXEL_SAMPLE_PER_IMAGE, image_logits.size), replace=False)
            logits_out.append(image_logits[chosen])
            labels_out.append(image_truth[chosen].astype(np.float32))
            top_logits.append(np.partition(image_logits, image_logits.size - k)[image_logits.size - k :])
            has_mask.append(bool(image_truth.any()))
            from_authentic.append(np.full(len(chosen), not image_truth.any()))
    loss_sum, count = float(gather(np.array([loss_sum]))[...].sum()), int(gather(np.array([count])).sum())
    validation = {
        "valid_loss": np.array(loss_sum / max(1, count)),
        "logits": gather(np.concatenate(logits_out) if logits_out else np.zeros(0, np.float32)),
        "labels": gather(np.concatenate(labels_out) if labels_out else np.zeros(0, np.float32)),
    }
    if not is_classifier:
        validation["pixel_counts"] = gather(counts[None]).sum(0)
        validation["top_logits"] = gather(np.stack(top_logits) if top_logits else np.zeros((0, 1), np.float32))
        validation["has_mask"] = gather(np.array(has_mask, dtype=bool))
        validation["from_authentic"] = gather(np.concatenate(from_authentic) if from_authentic else np.zeros(0, bool))
        if num_classes:
            validation["class_stats"] = gather(class_stats[None]).sum(0)
            validation["class_confusion"] = gather(confusion[None]).sum(0)
    return validation


def _epoch_metrics(validation: dict[str, np.ndarray], is_classifier: bool, class_names: tuple[str, ...] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {"valid_loss": float(validation["valid_loss"])}
    if is_classifier:
        figures = classification_metrics(validation["labels"], sigmoid(validation["logits"]), 0.5)
        row.update({k: figures[k] for k in ("accuracy", "f1", "roc_auc")})
        return row
    true_positive, false_positive, false_negative, true_negative = (int(v) for v in validation["pixel_counts"])
    counts = PixelCounts(true_positive, false_positive, false_negative, true_negative,
                         true_positive + false_negative, true_positive + false_positive + false_negative + true_negative)
    figures = counts.to_dict()
    row.update({k: figures[k] for k in ("pixel_f1", "pixel_iou", "all_one_mask_f1")})
    if "class_stats" in validation:
        per_class = class_metrics(validation["class_stats"], class_names)
        row.update({"mean_iou": per_class["mean_iou"], "mean_f1": per_class["mean_f1"],
                    "class_iou": {name: values["iou"] for name, values in per_class["per_class"].items()}})
    return row


def calibrate_card(card: ModelCard, validation: dict[str, np.ndarray], target_fpr: float,
                   target_pixel_fpr: float = DEFAULT_TARGET_PIXEL_FPR) -> ModelCard:
    """Temperature and thresholds fitted on validation outputs, written into a copy of the card.

    With only one class in the validation outputs there is nothing to fit: the card is returned as is.
    """
    if np.unique(validation["labels"]).size < 2:
        import warnings

        warnings.warn("Validation outputs hold one class only; temperature and thresholds are left unchanged.", stacklevel=2)
        return card
    temperature = fit_temperature(validation["logits"], validation["labels"])
    probabilities = sigmoid(validation["logits"], temperature)
    if card.kind == CLASSIFIER:
        thresholds = {"ai_generated": decision_threshold(probabilities, validation["labels"], target_fpr)}
        return card.replace(temperature=temperature, thresholds=thresholds)
    # from_authentic: the samples of validation windows with nothing manipulated (_validate records it for every segmenter)
    pixel, _rule = pixel_threshold(probabilities, validation["labels"], validation["from_authentic"], target_pixel_fpr)
    thresholds = {"pixel": pixel, "manipulated": card.threshold("manipulated")}
    scores = image_manipulation_scores(validation["top_logits"], temperature)
    if (~validation["has_mask"]).any():
        thresholds["manipulated"] = decision_threshold(scores, validation["has_mask"], target_fpr)
    return card.replace(temperature=temperature, thresholds=thresholds)


def image_manipulation_scores(top_logits: np.ndarray, temperature: float) -> np.ndarray:
    """forensics.masks.manipulation_score of each image, from its stored top-1% logits."""
    return np.array([manipulation_score(sigmoid(row, temperature), top_fraction=1.0) for row in top_logits])


def _calibrated_metrics(card: ModelCard, validation: dict[str, np.ndarray]) -> dict[str, Any]:
    probabilities = sigmoid(validation["logits"], card.temperature)
    if card.kind == CLASSIFIER:
        figures = classification_metrics(validation["labels"], probabilities, card.threshold("ai_generated"))
        return {"validation_calibrated": figures}
    pixel = PixelCounts()
    pixel.add(probabilities >= card.threshold("pixel"), validation["labels"].astype(bool))
    figures = {"pixel_sample": {"threshold": card.threshold("pixel"), **pixel.to_dict()}}
    if "class_stats" in validation:
        figures["classes"] = {**class_metrics(validation["class_stats"], card.class_names),
                              "confusion_matrix": validation["class_confusion"].tolist(), "class_names": list(card.class_names)}
    if (~validation["has_mask"]).any() and validation["has_mask"].any():
        scores = image_manipulation_scores(validation["top_logits"], card.temperature)
        figures["image_level"] = classification_metrics(validation["has_mask"], scores, card.threshold("manipulated"),
                                                        class_names=("authentic", "manipulated"))
    return {"validation_calibrated": figures}
