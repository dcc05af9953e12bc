"""Batch inference for both models on uint8 arrays, on GPU or CPU with the same code.

Normalisation comes from the model card. The hot path takes uint8 NHWC batches
(4x smaller than float to move around), converts on the device, and runs
channels-last under autocast when a GPU is present.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from forensics.checkpoint import model_from_weights, resolve_model
from forensics.model_card import ModelCard, default_classifier_card, default_segmenter_card
from forensics.models import prepare_for_inference


def pick_device(prefer: str | None = None) -> torch.device:
    """`cuda` when available (or asked for), otherwise `cpu`."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_model_input(pixels: np.ndarray, card: ModelCard, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) channels-last on `device`."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if not pixels.flags.writeable:  # zero-copy views from Ray's object store are read-only
        pixels = pixels.copy()
    batch = torch.from_numpy(pixels)
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(card.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(card.std, device=device).view(1, 3, 1, 1)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


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
            output = self.model(to_model_input(pixels, self.card, self.device))
        return output.float()


class ClassifierPredictor(ModelPredictor):
    """EfficientNet classifier: calibrated P(AI-generated) per image."""

    @classmethod
    def from_checkpoint(cls, path: str | Path | None, device: torch.device | None = None, input_size=None):
        card = default_classifier_card() if input_size is None else default_classifier_card(tuple(input_size))
        model, card = resolve_model(path, card)
        return cls(model, card, device)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N,) float32 calibrated probabilities."""
        logits = self.logits(pixels).reshape(len(pixels), -1)[:, 0]
        return torch.sigmoid(logits / self.card.temperature).cpu().numpy().astype(np.float32)


class SegmenterPredictor(ModelPredictor):
    """U-Net segmenter: per-pixel P(manipulated) at the model's input size."""

    @classmethod
    def from_checkpoint(cls, path: str | Path | None, device: torch.device | None = None, input_size=None):
        card = default_segmenter_card() if input_size is None else default_segmenter_card(tuple(input_size))
        model, card = resolve_model(path, card)
        return cls(model, card, device)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, H, W) float32 probabilities (first class channel)."""
        logits = self.logits(pixels)[:, 0]
        return torch.sigmoid(logits / self.card.temperature).cpu().numpy().astype(np.float32)
