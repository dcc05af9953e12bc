"""Checkpoints: a safetensors file of weights plus a JSON model card beside it.

`weights.safetensors` pairs with `weights.json`. Loading never unpickles anything,
and every failure names the file and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

from forensics.model_card import ModelCard

if TYPE_CHECKING:  # torch loads only when a model is built: a scan's driver reads cards long before that
    from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the fix."""


def card_path_for(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_checkpoint(model: nn.Module, card: ModelCard, weights_path: str | Path, half: bool = False) -> Path:
    """Write `<name>.safetensors` and `<name>.json`; returns the weights path.

    Args:
        half: store floating tensors as float16 (half the size; loading casts back to float32).
    """
    from safetensors.torch import save_file

    weights_path = Path(weights_path).with_suffix(".safetensors")
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    save_file(state, str(weights_path), metadata={"forgescan_card": card.to_json()})
    card.write(card_path_for(weights_path))
    return weights_path


def read_card(weights_path: str | Path) -> ModelCard:
    """The card beside a weights file, or the copy embedded in its safetensors header."""
    weights_path = Path(weights_path)
    card_file = card_path_for(weights_path)
    try:
        if card_file.exists():
            return ModelCard.read(card_file)
        from safetensors import safe_open

        with safe_open(str(weights_path), framework="pt") as handle:
            embedded = (handle.metadata() or {}).get("forgescan_card")
        if embedded is None:
            raise CheckpointError(
                f"Checkpoint {weights_path} has no model card: expected {card_file} next to it. "
                "Save checkpoints with forensics.save_checkpoint or `forgescan train`."
            )
        return ModelCard.from_dict(json.loads(embedded))
    except CheckpointError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Model card for {weights_path} is not valid: {error}") from None
    except Exception as error:
        raise CheckpointError(
            f"Cannot read checkpoint {weights_path}: {error}. "
            "Pass a .safetensors file written by forgescan (pickled .pt/.pth files are refused)."
        ) from None


def load_checkpoint(weights_path: str | Path, expected_kind: str | None = None) -> tuple[nn.Module, ModelCard]:
    """Build the model from the card and load the weights, checking every tensor name and shape."""
    data, card = read_checkpoint(weights_path, expected_kind)
    return model_from_weights(data, card, str(weights_path)), card


def read_checkpoint(weights_path: str | Path, expected_kind: str | None = None) -> tuple[bytes, ModelCard]:
    """The raw safetensors bytes and the card, with clear errors for a wrong or missing file."""
    weights_path = Path(weights_path)
    if not weights_path.exists():
        raise CheckpointError(f"Checkpoint {weights_path} does not exist. Check the path, or omit it to use the default.")
    if weights_path.suffix != ".safetensors":
        raise CheckpointError(
            f"Checkpoint {weights_path} is not a .safetensors file. forgescan never unpickles "
            "weights; convert with `safetensors.torch.save_file(model.state_dict(), path)`."
        )
    card = read_card(weights_path)
    if expected_kind is not None and card.kind != expected_kind:
        raise CheckpointError(
            f"Checkpoint {weights_path} holds a {card.kind}, but a {expected_kind} was expected: "
            f"pass it to --{card.kind} instead."
        )
    return weights_path.read_bytes(), card


def model_from_weights(data: bytes, card: ModelCard, name: str = "checkpoint") -> nn.Module:
    """Build the card's architecture and load safetensors bytes into it, strictly."""
    from safetensors.torch import load as load_safetensors

    from forensics.models import ModelBuildError, build_model

    try:
        model = build_model(card)
    except ModelBuildError as error:
        raise CheckpointError(f"Checkpoint {name}: {error}") from None
    try:
        state = load_safetensors(data)
    except Exception as error:
        raise CheckpointError(f"Cannot read weights from {name}: {error}. Is the file complete?") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"Checkpoint {name} does not match architecture {card.architecture}: "
            f"{len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong_shape)} with another shape {wrong_shape[:3]}. "
            "The weights were saved from a different model; fix the card's architecture or use the matching file."
        )
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model


BUNDLED_CHECKPOINTS = Path(__file__).parent / "checkpoints"


# Where checkpoints that were proven to build are remembered (one empty file per digest), so that a scheduled
# scan does not import torch in its driver every night to re-prove the same bytes. FORGESCAN_CACHE_DIR moves it.
VALIDATED_CHECKPOINTS = "validated-checkpoints"


def cache_directory() -> Path:
    base = os.environ.get("FORGESCAN_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "forgescan"
    return Path(base).expanduser()


def validation_digest(data: bytes, card: ModelCard) -> str:
    """What a successful build proves: these weights, this card, these library versions."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(data)
    digest.update(card.to_json().encode())
    for package in ("torch", "timm", "segmentation-models-pytorch", "safetensors"):
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=absent".encode())
    return digest.hexdigest()


def validate_weights(data: bytes, card: ModelCard, name: str = "checkpoint") -> bool:
    """Prove the weights build the card's model (raises CheckpointError), once per content digest.

    Returns True when the model was built now, False when these bytes were proven before.
    """
    marker = cache_directory() / VALIDATED_CHECKPOINTS / validation_digest(data, card)
    if marker.exists():
        return False
    model_from_weights(data, card, name)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only home: validate again next time
    return True


def bundled_checkpoint(kind: str) -> Path | None:
    """The demo checkpoint shipped with forgescan for `kind`, if present."""
    path = BUNDLED_CHECKPOINTS / f"{kind}.safetensors"
    return path if path.exists() else None


def resolve_model(weights_path: str | Path | None, default_card: ModelCard) -> tuple[nn.Module, ModelCard]:
    """Load a checkpoint, or build the default card's architecture with random weights."""
    from forensics.models import build_model

    if weights_path is None:
        return build_model(default_card), default_card
    return load_checkpoint(weights_path, expected_kind=default_card.kind)


def update_card(weights_path: str | Path, card: ModelCard) -> Path:
    """Write a new card for existing weights: the JSON beside them and the copy in the safetensors header."""
    from safetensors.torch import load_file, save_file

    weights_path = Path(weights_path)
    if not weights_path.exists():
        raise CheckpointError(f"Checkpoint {weights_path} does not exist; cannot update its model card.")
    state = load_file(str(weights_path))
    save_file(state, str(weights_path), metadata={"forgescan_card": card.to_json()})
    card.write(card_path_for(weights_path))
    return card_path_for(weights_path)
