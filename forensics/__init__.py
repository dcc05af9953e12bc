"""forgescan's forensic core: models, checkpoints, decoding, masks and verdicts. No Ray here."""

from forensics.checkpoint import CheckpointError, load_checkpoint, read_card, save_checkpoint
from forensics.decode import DEFAULT_MAX_PIXELS, DecodedImage, ImageDecodeError, decode_image
from forensics.inference import ClassifierPredictor, SegmenterPredictor, pick_device
from forensics.masks import MaskRLE, decode_mask, encode_mask, manipulation_score, summarise_mask
from forensics.model_card import CLASSIFIER, SEGMENTER, ModelCard, default_classifier_card, default_segmenter_card
from forensics.models import ModelBuildError, build_model
from forensics.verdict import AI_GENERATED, AUTHENTIC, ERROR, MANIPULATED, Verdict, decide_verdict

__all__ = [
    "AI_GENERATED", "AUTHENTIC", "CLASSIFIER", "ERROR", "MANIPULATED", "SEGMENTER", "DEFAULT_MAX_PIXELS",
    "CheckpointError", "ClassifierPredictor", "DecodedImage", "ImageDecodeError", "MaskRLE", "ModelBuildError",
    "ModelCard", "SegmenterPredictor", "Verdict", "build_model", "decide_verdict", "decode_image", "decode_mask",
    "default_classifier_card", "default_segmenter_card", "encode_mask", "load_checkpoint", "manipulation_score",
    "pick_device", "read_card", "save_checkpoint", "summarise_mask",
]
