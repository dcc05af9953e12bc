"""Model factories: one place that turns a model card into a torch module.

Nothing is downloaded: models are built with random weights unless a local
weights file is given (a hub cache or file prepared by the deployment).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from forensics.model_card import (CLASSIFIER, DEFAULT_CLASSIFIER_NAME, DEFAULT_SEGMENTER_ARCH, DEFAULT_SEGMENTER_ENCODER,
                                   IMAGENET_STD, SEGMENTER, ModelCard)

# Encoders tested end to end (train, save, load, scan); any other smp encoder builds too.
SEGMENTER_ENCODERS = ("efficientnet-b0", "resnet34", "vgg16_bn")
SEGMENTER_ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "PSPNet", "MAnet", "PAN")


class ModelBuildError(ValueError):
    """The card asks for a model this installation cannot build."""


# Fixed high-pass filters of the spatial rich model (Fridrich & Kodovsky 2012), the three that
# RGB-N (Zhou et al. 2018) feeds a manipulation detector: residuals where sensor noise, resampling
# and JPEG traces live, and where a pasted region disagrees with its host.
SRM_KERNELS = (
    [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
)
SRM_SCALES = (4.0, 12.0, 2.0)
SRM_TRUNCATION = 3.0  # residuals truncated at +-3 grey levels (the rich model truncates its quantised residuals at 2)
# The input is normalised by the card's std (ImageNet's); residuals are taken back in grey levels.
_GREY_LEVELS_PER_UNIT = 255.0 * sum(IMAGENET_STD) / len(IMAGENET_STD)


class NoiseResidualStem(nn.Module):
    """The encoder's first convolution, fed RGB plus three SRM noise residuals of the grey image.

    It replaces the encoder's first 3-channel convolution, so the model still takes RGB and
    everything around it (tiling, calibration, the scan) is unchanged.
    """

    def __init__(self, conv: nn.Conv2d):
        from segmentation_models_pytorch.encoders._utils import patch_first_conv  # smp's own in_channels helper

        super().__init__()
        # The convolution itself is kept (its class may pad on its own, as EfficientNet's "same" stem does);
        # smp grows its weight by the residual channels, freshly initialised.
        patch_first_conv(conv, new_in_channels=3 + len(SRM_KERNELS), pretrained=False)
        self.conv = conv
        kernels = torch.tensor(SRM_KERNELS, dtype=torch.float32) / torch.tensor(SRM_SCALES)[:, None, None]
        self.register_buffer("srm", kernels[:, None], persistent=False)

    def residuals(self, image: torch.Tensor) -> torch.Tensor:
        grey = image.mean(dim=1, keepdim=True) * _GREY_LEVELS_PER_UNIT
        grey = nn.functional.pad(grey, (2, 2, 2, 2), mode="replicate")  # no false edge at a tile's border
        residual = nn.functional.conv2d(grey, self.srm.to(grey.dtype))
        return residual.clamp(-SRM_TRUNCATION, SRM_TRUNCATION) / SRM_TRUNCATION

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([image, self.residuals(image)], dim=1))

    def load_rgb_weight(self, weight: torch.Tensor) -> None:
        """Start from an RGB stem's features; the residual channels start small and random."""
        with torch.no_grad():
            self.conv.weight[:, :3] = weight
            nn.init.normal_(self.conv.weight[:, 3:], std=float(weight.std()) / 4)


def add_noise_residuals(model: nn.Module) -> nn.Module:
    """Swap the segmenter encoder's first RGB convolution for a `NoiseResidualStem`."""
    for name, module in model.encoder.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent_name, _, child = name.rpartition(".")
            parent = model.encoder.get_submodule(parent_name) if parent_name else model.encoder
            setattr(parent, child, NoiseResidualStem(module))
            return model
    raise ModelBuildError("noise_residuals needs an encoder whose first convolution takes RGB")


def build_classifier(name: str = DEFAULT_CLASSIFIER_NAME, **kwargs) -> nn.Module:
    """A timm image classifier with one logit (P(AI-generated) after a sigmoid)."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise ModelBuildError(f"Wrong classifier name `{name}`, timm models with a similar name: {close}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return timm.create_model(name, pretrained=False, num_classes=1, **kwargs)


def build_segmenter(
    arch: str = DEFAULT_SEGMENTER_ARCH, encoder_name: str = DEFAULT_SEGMENTER_ENCODER, classes: int = 1,
    noise_residuals: bool = False, **kwargs
) -> nn.Module:
    """A segmentation-models-pytorch network whose logits mark manipulated pixels.

    With ``noise_residuals`` the encoder also sees three SRM high-pass residuals of its input
    (`NoiseResidualStem`); the card's architecture records it, so the scan builds the same model.
    """
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
    model = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None, classes=classes, **kwargs)
    return add_noise_residuals(model) if noise_residuals else model


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
    for name, module in target.named_modules():  # a noise-residual stem keeps the file's RGB features
        rgb_weight = state.get(f"{name}.weight")
        if isinstance(module, NoiseResidualStem) and rgb_weight is not None and rgb_weight.shape[1] == 3:
            module.load_rgb_weight(rgb_weight)
            usable[f"{name}.weight"] = rgb_weight
    return sorted(usable)


def prepare_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, the device, and channels-last memory layout (about 2x faster for EfficientNet)."""
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last)
