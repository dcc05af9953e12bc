"""forgescan's forensic core: models, checkpoints, decoding, masks and verdicts. No Ray here.

Names are re-exported lazily, so that code needing only decoding or masks
(the pipeline's decode and output workers) never pays for importing torch.
"""

import importlib

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


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'forensics' has no attribute {name!r}")
