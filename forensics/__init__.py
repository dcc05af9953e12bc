"""forgescan's forensic core: models, checkpoints, decoding, masks and verdicts. No Ray here.

Names are re-exported lazily, so that code needing only decoding or masks
(the pipeline's decode and output workers) never pays for importing torch.
"""

import importlib
import subprocess
from pathlib import Path

_EXPORTS = {
    "forensics.checkpoint": ("CheckpointError", "load_checkpoint", "read_card", "save_checkpoint"),
    "forensics.decode": ("DEFAULT_MAX_PIXELS", "DecodedImage", "ImageDecodeError", "decode_image"),
    "forensics.inference": ("ClassifierPredictor", "SegmenterPredictor", "pick_device"),
    "forensics.masks": ("MaskRLE", "decode_mask", "encode_mask", "manipulation_score", "summarise_mask"),
    "forensics.model_card": ("CLASSIFIER", "SEGMENTER", "ModelCard", "default_classifier_card", "default_segmenter_card"),
    "forensics.models": ("ModelBuildError", "build_model"),
    "forensics.perceptual_hash": ("MATCH_DISTANCE", "PerceptualHash", "hamming_distance", "pdq_hash"),
    "forensics.provenance": ("Provenance", "read_provenance"),
    "forensics.verdict": ("AI_GENERATED", "AUTHENTIC", "ERROR", "MANIPULATED", "Verdict", "decide_verdict"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def forgescan_version() -> str | None:
    """The installed forgescan package's version, or None when the code runs from a tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("forgescan")
    except PackageNotFoundError:
        return None


def code_version() -> str:
    """The code that runs now, for a model card (training, calibration and evaluation each record theirs): this
    checkout's commit (`-dirty` when tracked files have uncommitted changes), or the installed package's version
    where forgescan is not a git checkout."""
    root = Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == root:  # not a checkout that merely contains an installed copy
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    installed = forgescan_version()
    return f"forgescan {installed}" if installed else ""


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'forensics' has no attribute {name!r}")
