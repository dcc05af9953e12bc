"""Noise-residual segmenters: SRM residuals beside RGB, recorded in the card, started from ImageNet features."""

import numpy as np
import torch

from forensics.checkpoint import load_checkpoint, save_checkpoint
from forensics.model_card import IMAGENET_MEAN, IMAGENET_STD, default_segmenter_card
from forensics.models import NoiseResidualStem, build_model


def _card():
    card = default_segmenter_card((64, 64))
    return card.replace(architecture={**card.architecture, "noise_residuals": True})


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    image = (pixels.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def test_residuals_are_zero_on_a_flat_image_and_mark_a_noisy_patch():
    stem = build_model(_card()).encoder._conv_stem
    assert isinstance(stem, NoiseResidualStem)
    pixels = np.full((64, 64, 3), 120, np.uint8)
    noisy = pixels.copy()
    noisy[16:48, 16:48] += np.random.default_rng(0).integers(0, 4, (32, 32, 3), dtype=np.uint8)
    flat, patched = stem.residuals(_normalised(pixels)), stem.residuals(_normalised(noisy))
    assert flat.abs().max() < 1e-4
    inside, outside = patched[..., 20:44, 20:44].abs().mean(), patched[..., :12, :12].abs().mean()
    assert inside > 0.1 and outside < 1e-4


def test_a_noise_residual_segmenter_takes_rgb_and_survives_a_checkpoint_round_trip(tmp_path):
    card = _card()
    model = build_model(card).eval()
    image = torch.rand(2, 3, 64, 64)
    path = save_checkpoint(model, card, tmp_path / "segmenter")
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card.architecture["noise_residuals"] is True
    assert isinstance(loaded.encoder._conv_stem, NoiseResidualStem)
    assert loaded.encoder._conv_stem.conv.weight.shape[1] == 6
    with torch.no_grad():
        assert torch.allclose(model(image), loaded.eval()(image), atol=1e-5)


def test_imagenet_features_start_the_rgb_channels_of_a_noise_residual_stem(tmp_path):
    from safetensors.torch import load_file

    from forensics.models import load_backbone_weights
    from forensics.training.backbones import export_efficientnet_lite0

    path = export_efficientnet_lite0(tmp_path / "lite0.safetensors")
    card = _card()
    model = build_model(card)
    loaded = load_backbone_weights(model, card, path)
    rgb = load_file(str(path))["_conv_stem.weight"]
    stem = model.encoder._conv_stem.conv.weight
    assert "_conv_stem.weight" in loaded
    assert torch.equal(stem[:, :3], rgb) and stem[:, 3:].abs().sum() > 0
