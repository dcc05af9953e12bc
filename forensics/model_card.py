"""The model card: everything needed to rebuild, preprocess for and trust a checkpoint.

A card travels next to its safetensors file as JSON. Preprocessing, calibration
and verdict thresholds are read from it, never from constants scattered in code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSIFIER = "classifier"
SEGMENTER = "segmenter"
# The architectures a new card names unless told otherwise (forgescan train's --classifier-name, --arch, --encoder).
DEFAULT_CLASSIFIER_NAME = "efficientnet_b0"  # timm
DEFAULT_SEGMENTER_ARCH = "Unet"  # segmentation-models-pytorch
DEFAULT_SEGMENTER_ENCODER = "efficientnet-b0"
MODEL_KINDS = (CLASSIFIER, SEGMENTER)

RESIZE = "resize"
CENTER_CROP = "center_crop"
NATIVE_CROPS = "native_crops"
NATIVE_TILES = "native_tiles"
RESIZE_MODES = (RESIZE, CENTER_CROP, NATIVE_CROPS, NATIVE_TILES)
MIRROR_VIEWS = (1, 2, 4)  # a segmenter card's mirror_views: the input alone, + left-right, + top-bottom and both

BINARY_CLASSES = ("authentic", "manipulated")
# The manipulation types forensics.manipulations synthesises; class id = position, id 0 is always "not manipulated".
MANIPULATION_CLASSES = ("authentic", "spliced", "copy_moved", "removed", "retouched", "generated")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCard:
    """Description of one checkpoint.

    Attributes:
        kind: ``classifier`` (real vs AI-generated) or ``segmenter`` (manipulated regions).
        architecture: keyword arguments for the model factory, e.g.
            ``{"name": "efficientnet_b0"}`` or
            ``{"arch": "Unet", "encoder_name": "efficientnet-b0", "classes": 1}``.
        input_size: model input as ``[height, width]``.
        resize_mode: how an image becomes model input (forensics.tiling does the native ones):
            ``resize`` (whole image squashed to the input size: the quick triage view),
            ``center_crop`` (the central input_size pixels at native resolution),
            ``native_crops`` (classifier: `crops` native-resolution crops spread over the
            image, their logits averaged) or ``native_tiles`` (segmenter: overlapping
            input_size tiles at native resolution, blended back into one full-size map).
        crops: ``native_crops``: how many crops per image.
        tile_overlap: ``native_tiles``: pixels shared by neighbouring tiles (blended linearly).
        max_tiles: ``native_tiles``: an image needing more tiles is reduced by the smallest
            factor that fits (the output row records the factor); bounds time and memory per image.
        coarse_short_side: ``native_tiles``: when above 0, the segmenter also analyses the whole image
            shrunk to this short side (the scale a recipe trained at) and averages the two passes'
            class logits at the native map's size; an image whose analysed short side is no longer
            gets the native pass alone. 0 = native tiles only.
        mirror_views: segmenter: how many mirror images of every model input (tile or view) the
            model sees, their class logits mirrored back and averaged (forensics.tiling.mean_over_mirrors):
            1 = the input alone, 2 = and its left-right mirror, 4 = and its top-bottom and
            double mirrors. Costs that many forward passes.
        score_calibration: segmenter: Platt scaling of the raw image-level score (top-1% mean
            of the pixel map) into P(manipulated), ``{"slope": a, "intercept": b}`` applied to
            logit(raw); empty = the raw score is used as is.
        mean, std: per-channel normalisation applied to RGB values in [0, 1].
        temperature: logit temperature fitted by calibration (1.0 = uncalibrated).
        thresholds: decision thresholds, e.g. ``{"ai_generated": 0.5}`` or
            ``{"pixel": 0.5, "manipulated": 0.5}``.
        classes: segmenter: the per-pixel classes, a class's id being its position; id 0 is the
            authentic (not manipulated) class. Empty for a binary segmenter (one logit channel,
            P(manipulated) by a sigmoid); otherwise one softmax channel per class, and
            ``architecture["classes"]`` equals their number.
        version: written into every output row; contains ``untrained`` for random weights.
        trained: False when the weights are freshly initialised.
        code_version: the forgescan code that trained it (the checkout's commit, ``-dirty`` with
            uncommitted changes, or the installed package's version): ``reproduce`` gives this
            exact card at that code. Empty on cards written before it was recorded.
    """

    kind: str
    architecture: dict[str, Any]
    version: str
    input_size: tuple[int, int] = (256, 256)
    resize_mode: str = "resize"
    crops: int = 5
    tile_overlap: int = 32
    max_tiles: int = 1024
    coarse_short_side: int = 0
    mirror_views: int = 1
    classes: tuple[str, ...] = ()
    score_calibration: dict[str, float] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    trained: bool = False
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    reproduce: str = ""
    code_version: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"Wrong model kind `{self.kind}`, supported kinds: {list(MODEL_KINDS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Wrong resize_mode `{self.resize_mode}`, supported: {list(RESIZE_MODES)}")
        if self.resize_mode == NATIVE_TILES and not 0 <= self.tile_overlap < min(self.input_size):
            raise ValueError(f"tile_overlap must be in [0, {min(self.input_size)}) for {tuple(self.input_size)} tiles, got {self.tile_overlap}")
        if self.coarse_short_side < 0:
            raise ValueError(f"coarse_short_side must be 0 (off) or a short side in pixels, got {self.coarse_short_side}")
        if self.mirror_views not in MIRROR_VIEWS:
            raise ValueError(f"mirror_views must be one of {list(MIRROR_VIEWS)} (1 = no mirrors), got {self.mirror_views}")
        if self.kind != SEGMENTER and self.mirror_views != 1:
            raise ValueError(f"mirror_views is a segmenter setting; a {self.kind} card keeps 1, got {self.mirror_views}")
        if self.crops < 1 or self.max_tiles < 1:
            raise ValueError(f"crops and max_tiles must be >= 1, got crops={self.crops}, max_tiles={self.max_tiles}")
        object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))
        if self.kind == SEGMENTER:
            channels = int(self.architecture.get("classes", 1))
            if self.classes and len(self.classes) != channels:
                raise ValueError(f"The card names {len(self.classes)} classes {list(self.classes)} but its architecture has "
                                 f"{channels} output channels; set architecture.classes to {len(self.classes)}.")
            if channels > 1 and len(self.classes) < 2:
                raise ValueError(f"A segmenter with {channels} output channels needs its class names in `classes` "
                                 f"(id 0 = authentic), e.g. {list(MANIPULATION_CLASSES[:channels])}.")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"Class names must be unique, got {list(self.classes)}.")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def input_spec(self) -> tuple:
        """What decode_image should produce for this model: (h, w), (h, w, "center_crop"),
        or (h, w, "native_crops" | "native_tiles") when forensics.tiling cuts the input."""
        if self.resize_mode == RESIZE:
            return tuple(self.input_size)
        return (*self.input_size, self.resize_mode)

    @property
    def is_multiclass(self) -> bool:
        """True for a segmenter that predicts a manipulation type per pixel (softmax over `classes`)."""
        return len(self.classes) > 1

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names by class id: the card's `classes`, or authentic / manipulated for a binary segmenter."""
        return self.classes if self.is_multiclass else BINARY_CLASSES

    @property
    def is_native(self) -> bool:
        """True when the model sees native-resolution crops or tiles (not a resized thumbnail)."""
        return self.resize_mode in (CENTER_CROP, NATIVE_CROPS, NATIVE_TILES)

    def for_triage(self) -> "ModelCard":
        """This card in the quick triage view: a classifier scores one centre crop instead of
        several, a segmenter sees the whole image resized to its input, once (no mirror views),
        instead of native tiles."""
        if self.resize_mode == NATIVE_CROPS:
            return self.replace(resize_mode=CENTER_CROP)
        if self.resize_mode == NATIVE_TILES:
            return self.replace(resize_mode=RESIZE, mirror_views=1)
        return self

    def map_settings(self) -> dict[str, Any]:
        """The settings besides the thresholds that shape a segmenter's map (a scan's manifest records them)."""
        return {"resize_mode": self.resize_mode, "input_size": list(self.input_size), "tile_overlap": self.tile_overlap,
                "coarse_short_side": self.coarse_short_side, "mirror_views": self.mirror_views}

    def threshold(self, name: str, default: float = 0.5) -> float:
        return float(self.thresholds.get(name, default))

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["classes"] = list(self.classes)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown model card fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> "ModelCard":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")


def default_classifier_card(input_size: tuple[int, int] = ModelCard.input_size) -> ModelCard:
    """Card for a freshly initialised timm EfficientNet-B0 with one logit."""
    return ModelCard(
        kind=CLASSIFIER,
        architecture={"name": DEFAULT_CLASSIFIER_NAME},
        version=f"{DEFAULT_CLASSIFIER_NAME}-untrained",
        input_size=input_size,
        thresholds={"ai_generated": 0.5},
        trained=False,
        notes="Randomly initialised weights: verdicts are meaningless until trained.",
    )


def default_segmenter_card(
    input_size: tuple[int, int] = ModelCard.input_size, classes: tuple[str, ...] = (),
    encoder_name: str = DEFAULT_SEGMENTER_ENCODER,
) -> ModelCard:
    """Card for a freshly initialised smp U-Net (EfficientNet-B0 encoder unless named): binary when
    `classes` is empty, else one output channel per class name (id 0 = authentic)."""
    return ModelCard(
        kind=SEGMENTER,
        architecture={"arch": DEFAULT_SEGMENTER_ARCH, "encoder_name": encoder_name, "classes": max(1, len(classes))},
        classes=tuple(classes),
        version=f"unet-{encoder_name}-untrained",
        input_size=input_size,
        thresholds={"pixel": 0.5, "manipulated": 0.5},
        trained=False,
        notes="Randomly initialised weights: masks are meaningless until trained.",
    )
