"""Model factories: one place that turns a model card into a torch module.

Nothing is downloaded: models are built with random weights unless a local
weights file is given (a hub cache or file prepared by the deployment).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from forensics.model_card import CLASSIFIER, SEGMENTER, ModelCard

# Encoders tested end to end (train, save, load, scan); any other smp encoder builds too.
SEGMENTER_ENCODERS = ("efficientnet-b0", "resnet34", "vgg16_bn")
SEGMENTER_ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "PSPNet", "MAnet", "PAN")


class ModelBuildError(ValueError):
    """The card asks for a model this installation cannot build."""


def build_classifier(name: str = "efficientnet_b0", **kwargs) -> nn.Module:
    """A timm image classifier with one logit (P(AI-generated) after a sigmoid)."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise ModelBuildError(f"Wrong classifier name `{name}`, timm models with a similar name: {close}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return timm.create_model(name, pretrained=False, num_classes=1, **kwargs)


def build_segmenter(
    arch: str = "Unet", encoder_name: str = "efficientnet-b0", classes: int = 1, **kwargs
) -> nn.Module:
    """A segmentation-models-pytorch network whose logits mark manipulated pixels."""
    import segmentation_models_pytorch as smp

    if arch not in SEGMENTER_ARCHITECTURES:
        raise ModelBuildError(f"Wrong segmenter arch `{arch}`, supported: {list(SEGMENTER_ARCHITECTURES)}")
    encoders = smp.encoders.get_encoder_names()
    if encoder_name not in encoders:
        import difflib

        similar = difflib.get_close_matches(str(encoder_name), encoders, n=6, cutoff=0.5)
        raise ModelBuildError(
            f"Wrong encoder name `{encoder_name}`, supported encoders: {list(SEGMENTER_ENCODERS)} "
            f"(tested end to end); similar smp encoders: {similar} (all: smp.encoders.get_encoder_names())"
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None, classes=classes, **kwargs)


def build_model(card: ModelCard, backbone_weights: str | Path | None = None) -> nn.Module:
    """Build the module a card describes, optionally loading local backbone weights.

    Args:
        card: the model card; ``card.architecture`` holds the factory keyword arguments.
        backbone_weights: optional safetensors file with ImageNet (or other) features,
            loaded non-strictly into the classifier or the segmenter's encoder.
    """
    try:
        if card.kind == CLASSIFIER:
            model = build_classifier(**card.architecture)
        elif card.kind == SEGMENTER:
            model = build_segmenter(**card.architecture)
        else:  # pragma: no cover - ModelCard validates kind
            raise ModelBuildError(f"Unknown model kind {card.kind}")
    except TypeError as error:
        raise ModelBuildError(f"Model card architecture {card.architecture} is not valid for a {card.kind}: {error}")
    if backbone_weights is not None:
        load_backbone_weights(model, card, backbone_weights)
    return model


def load_backbone_weights(model: nn.Module, card: ModelCard, path: str | Path) -> list[str]:
    """Load matching tensors from a local safetensors file; returns the names that loaded."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    target = model.encoder if card.kind == SEGMENTER else model
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelBuildError(
            f"No tensor in {path} matches the {card.kind} {card.architecture}; "
            "check that the file holds weights for this backbone."
        )
    target.load_state_dict(usable, strict=False)
    return sorted(usable)


def prepare_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, the device, and channels-last memory layout (about 2x faster for EfficientNet)."""
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last)
