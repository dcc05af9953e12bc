"""The demo checkpoints that ship in the package: trained, small, carded, and usable by the scanner."""

from __future__ import annotations

import numpy as np
import pytest

from forensics.checkpoint import BUNDLED_CHECKPOINTS, load_checkpoint
from forensics.inference import ModelPredictor

KINDS = ("classifier", "segmenter")


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_checkpoint_is_trained_small_and_fully_carded(kind):
    path = BUNDLED_CHECKPOINTS / f"{kind}.safetensors"
    assert path.stat().st_size < 20 * 1024 * 1024
    model, card = load_checkpoint(path, expected_kind=kind)
    assert card.trained and "untrained" not in card.version
    steps = card.reproduce.split(" && ")  # every step a forgescan command (or the backbone export training reads)
    assert card.training_data.get("sha256") and all(
        step.startswith(("forgescan ", "python -m jobs.", "python -m forensics.training.backbones ")) for step in steps)
    assert card.metrics and card.temperature > 0
    expected = {"ai_generated"} if kind == "classifier" else {"pixel", "manipulated"}
    assert expected <= set(card.thresholds)
    predictor = ModelPredictor(model, card)
    height, width = card.input_size
    output = predictor.logits(np.zeros((2, height, width, 3), np.uint8))
    assert output.shape[0] == 2 and np.isfinite(output.numpy()).all()
