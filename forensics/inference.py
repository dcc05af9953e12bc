"""Batch inference for both models on uint8 arrays, on GPU or CPU with the same code.

Normalisation comes from the model card. The hot path takes uint8 NHWC batches
(4x smaller than float to move around), converts on the device, and runs
channels-last under autocast when a GPU is present.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from forensics.checkpoint import model_from_weights, resolve_model
from forensics.model_card import NATIVE_TILES, ModelCard, default_classifier_card, default_segmenter_card
from forensics.models import prepare_for_inference
from forensics.tiling import TILES_PER_BATCH


def pick_device(prefer: str | None = None) -> torch.device:
    """`cuda` when available (or asked for), otherwise `cpu`."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_model_input(
    pixels: np.ndarray, card: ModelCard, device: torch.device, staging: "PinnedStaging | None" = None
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) channels-last on `device`.

    The uint8 batch travels to the device (4x fewer bytes than float; through a
    reusable pinned buffer on CUDA when `staging` is given), and is converted
    there in one allocation: an NHWC array viewed as NCHW already has the
    channels-last layout, so no transpose copy is made.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if device.type == "cuda" and staging is not None:
        batch = staging.copy_in(pixels).to(device, non_blocking=True)
        staging.record_use()
    else:
        if not pixels.flags.writeable:  # zero-copy views from Ray's object store are read-only
            pixels = pixels.copy()
        batch = torch.from_numpy(pixels)
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
    scale, shift = _normalisation(tuple(card.mean), tuple(card.std), device)
    batch = batch.permute(0, 3, 1, 2).to(torch.float32).mul_(scale).add_(shift)
    return batch.contiguous(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=16)
def _normalisation(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / 255 - mean) / std as x * scale + shift, built once per device (no host-to-device copy per batch)."""
    std_array = np.asarray(std, dtype=np.float64)
    scale = torch.tensor(1.0 / (255.0 * std_array), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    shift = torch.tensor(-np.asarray(mean, dtype=np.float64) / std_array, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return scale, shift


class PinnedStaging:
    """A page-locked host buffer reused across batches, so each host-to-GPU copy is asynchronous and needs no
    fresh `cudaHostAlloc`; an event guards the buffer until the previous copy has finished."""

    def __init__(self):
        self._buffer: torch.Tensor | None = None
        self._copied = None

    def copy_in(self, pixels: np.ndarray) -> torch.Tensor:
        """The pixels copied into the pinned buffer (read-only object-store views need no extra copy)."""
        if self._copied is not None:
            self._copied.synchronize()
        if self._buffer is None or self._buffer.numel() < pixels.size:
            self._buffer = torch.empty(pixels.size, dtype=torch.uint8, pin_memory=True)
        host = self._buffer[: pixels.size].view(pixels.shape)
        np.copyto(host.numpy(), pixels)
        return host

    def record_use(self) -> None:
        self._copied = torch.cuda.Event()
        self._copied.record()


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class ModelPredictor:
    """A loaded model with its card, ready for batched inference."""

    def __init__(self, model: nn.Module, card: ModelCard, device: torch.device | None = None):
        self.device = device or pick_device()
        self.card = card
        self.model = prepare_for_inference(model, self.device)
        self._staging = PinnedStaging() if self.device.type == "cuda" else None

    @classmethod
    def from_weights(cls, data: bytes | None, card: ModelCard, device: torch.device | None = None):
        """From safetensors bytes (None = the card's architecture with random weights)."""
        from forensics.models import build_model

        model = build_model(card) if data is None else model_from_weights(data, card, card.version)
        return cls(model, card, device)

    @property
    def version(self) -> str:
        return self.card.version

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray) -> torch.Tensor:
        with _autocast(self.device):
            output = self.model(to_model_input(pixels, self.card, self.device, self._staging))
        return output.float()


class ClassifierPredictor(ModelPredictor):
    """EfficientNet classifier: calibrated P(AI-generated) per image."""

    @classmethod
    def from_checkpoint(cls, path: str | Path | None, device: torch.device | None = None, input_size=None):
        card = default_classifier_card() if input_size is None else default_classifier_card(tuple(input_size))
        model, card = resolve_model(path, card)
        return cls(model, card, device)

    def view(self, decoded: np.ndarray) -> np.ndarray:
        """See forensics.tiling.classifier_view."""
        from forensics.tiling import classifier_view

        return classifier_view(self.card, decoded)

    def image_logits(self, views: np.ndarray) -> np.ndarray:
        """See classifier_logits."""
        return classifier_logits(self, views)

    def predict(self, views: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) or (N, crops, h, w, 3) uint8 -> (N,) float32 calibrated probabilities."""
        logits = torch.as_tensor(classifier_logits(self, views))
        return torch.sigmoid(logits / self.card.temperature).numpy().astype(np.float32)


class SegmenterPredictor(ModelPredictor):
    """U-Net segmenter: per-pixel P(manipulated), and a calibrated image-level P(manipulated)."""

    tiles_per_batch = TILES_PER_BATCH

    @classmethod
    def from_checkpoint(cls, path: str | Path | None, device: torch.device | None = None, input_size=None):
        card = default_segmenter_card() if input_size is None else default_segmenter_card(tuple(input_size))
        model, card = resolve_model(path, card)
        return cls(model, card, device)

    def view(self, decoded: np.ndarray) -> tuple[np.ndarray, float | None]:
        """See forensics.tiling.segmenter_view."""
        from forensics.tiling import segmenter_view

        return segmenter_view(self.card, decoded)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 at the model's input size -> (N, h, w) float32 P(manipulated)
        (any class but authentic for a multi-class card)."""
        logits = manipulation_channel(self.card, self.logits(pixels))
        return torch.sigmoid(logits / self.card.temperature).cpu().numpy().astype(np.float32)

    def probability_maps(self, views):
        """Each view -> its probability map at the view's own size, in order (segmenter_logit_maps, then
        probabilities)."""
        for class_logits in segmenter_logit_maps(self, views, self.tiles_per_batch, class_maps=True):
            yield self.probabilities(class_logits)

    def probabilities(self, class_logits: np.ndarray) -> np.ndarray:
        """(C, H, W) class logits (segmenter_logit_maps with class_maps) -> the map with the card's temperature:
        (H, W) P(manipulated) for a binary card, (C, H, W) class probabilities
        (forensics.masks.class_probabilities) for a multi-class one."""
        from scipy.special import expit

        from forensics.masks import class_probabilities

        if self.card.is_multiclass:
            return class_probabilities(class_logits, self.card.temperature)
        return expit(class_logits[0] / self.card.temperature).astype(np.float32)

    def image_score(self, probabilities: np.ndarray) -> float:
        """Calibrated P(image manipulated) from a pixel probability map, (H, W) or (C, H, W) class
        probabilities (Platt scaling from the card)."""
        from forensics.calibration import platt
        from forensics.masks import manipulated_probabilities, manipulation_score

        raw = manipulation_score(manipulated_probabilities(probabilities))
        calibration = self.card.score_calibration
        if not calibration:
            return raw
        return float(platt(raw, calibration["slope"], calibration["intercept"]))


def classifier_logits(predictor: ModelPredictor, views: np.ndarray) -> np.ndarray:
    """(N, h, w, 3) or (N, crops, h, w, 3) uint8 -> (N,) raw logits (before temperature): an image
    seen as several crops scores the mean of its crops' logits."""
    views = np.asarray(views)
    if views.ndim == 4:
        return predictor.logits(views).reshape(len(views), -1)[:, 0].cpu().numpy()
    count, crops = views.shape[:2]
    flat = views.reshape(count * crops, *views.shape[2:])
    return predictor.logits(flat).reshape(count, crops, -1)[..., 0].mean(dim=1).cpu().numpy()


def manipulation_channel(card: ModelCard, logits: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) segmenter logits -> (N, h, w) logits of "manipulated": the one channel of a binary
    card, logsumexp(manipulated classes) - authentic for a multi-class one (forensics.masks.manipulation_logits)."""
    if not card.is_multiclass:
        return logits[:, 0]
    return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]


def segmenter_logit_maps(predictor: ModelPredictor, views, tiles_per_batch: int = TILES_PER_BATCH, class_maps: bool = False):
    """Each segmenter view -> its (H, W) raw logit map of "manipulated" at the view's own size, or with
    `class_maps` its (C, H, W) class logits (multi-class cards; a binary card gives (1, H, W)).

    ``native_tiles``: overlapping tiles of all views stream through the model in batches of
    `tiles_per_batch` and their logits are blended back (forensics.tiling), averaged with a pass over the
    whole image at the card's `coarse_short_side` when it sets one; other modes: the
    views are model inputs already and go through in batches of `tiles_per_batch`. Every batch is
    also seen mirrored when the card's `mirror_views` asks (forensics.tiling.mean_over_mirrors). Scan,
    evaluation and calibration all call this, so they see the same maps.
    """
    card = predictor.card

    from forensics.tiling import mean_over_mirrors

    def tile_logits(pixels: np.ndarray) -> np.ndarray:
        return mean_over_mirrors(lambda batch: predictor.logits(batch).cpu().numpy(), pixels, card.mirror_views)

    from forensics.masks import manipulation_logits

    def finish(logits: np.ndarray) -> np.ndarray:  # (C, H, W) class logits -> what the caller asked for
        if class_maps:
            return logits
        return manipulation_logits(logits) if card.is_multiclass else logits[0]

    if card.resize_mode != NATIVE_TILES:
        batch = []
        for view in views:
            batch.append(view)
            if len(batch) == tiles_per_batch:
                yield from map(finish, tile_logits(np.stack(batch)))
                batch = []
        if batch:
            yield from map(finish, tile_logits(np.stack(batch)))
        return
    from forensics.tiling import stitch_two_scales

    for logits, _plan in stitch_two_scales(views, tile_logits, card.input_size[0], card.tile_overlap, card.max_tiles,
                                           card.coarse_short_side, tiles_per_batch=tiles_per_batch):
        yield finish(logits)
