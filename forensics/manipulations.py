"""Manipulation families for the multi-class segmenter: what was done to a region, not only where.

Each family edits one region of a scikit-image photograph and returns the image
with a class-indexed mask (ids of forensics.model_card.MANIPULATION_CLASSES):

- ``splice``: a region of ANOTHER photograph pasted in, with or without
  resampling (the donor rescaled by 0.6-1.6x), colour matching to the target
  (Reinhard: per-channel mean and spread) and feathered edges;
- ``copy_move``: a region of the same image copied elsewhere (optionally
  rescaled; the destination is the manipulated region);
- ``removal``: a region inpainted away (OpenCV Telea or Navier-Stokes);
- ``retouch``: local blur, sharpening, noise or a brightness/contrast change;
- ``double_jpeg``: a region replaced by itself compressed on a JPEG grid shifted
  by 1-7 pixels (the misaligned double compression a region pasted from another
  JPEG carries); labelled ``spliced``, the edit it is the trace of;
- ``generated_region``: a region re-drawn by a generator family
  (forensics.generators), as generative fill would.

Hosts and donors are cut from the photographs as a scan meets them
(`PhotoSampling`): half the time at native resolution, with no resampling of
their own (a resampled donor then differs from its host, the trace a splice
detector needs), and half the time after a camera-style JPEG of the whole
photograph (so a crop carries a JPEG grid at any offset, as crops of camera
JPEGs do). Every sample then goes through the post-processing chain of
forensics.generators (resize, mild noise, JPEG/WebP 60-95 or PNG), the mask
resized with it (nearest); the chain resizes less often than a classifier's
(`MANIPULATION_POST_PROCESSING`), because a global resize hides the local
resampling difference a splice leaves.

How widely each edit is drawn is a `ManipulationProcedures` (`PROCEDURES`):
`standard` is the recipe the shipped segmenter trained on; `small-regions` is
the same with regions from 0.5 % of the image (log-uniform to 30 %, where
`standard` draws 3-30 % uniformly); `varied` widens
every family so that no one recipe is what a model learns: regions that
follow the picture's own edges (superpixels) or brush strokes beside the
geometric shapes, from 0.5 % of the image (small objects) to 30 %; donors
resampled by any factor in 0.5-2 (near 1 too) with one of five
interpolations, sometimes rotated or JPEG-compressed before the paste;
copy-moves rotated and rescaled more widely; removals by biharmonic
inpainting too; retouching by median filter and saturation too. Neither
`small-regions` nor `varied` beat `standard` on the held-out-photographs
check (docs/training.md, "Varied procedures").

Only scikit-image photographs are used, split by
photograph (forensics.synthetic.photographs_for_split), so no photograph is in
both a training and an evaluation set; scikit-learn's and matplotlib's sample
photographs are reserved for independent checks.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from forensics.generators import CaptureConditions, PostProcessing, capture
from forensics.model_card import MANIPULATION_CLASSES
from forensics.synthetic import AUTHENTIC_FRACTION, MASK_SHAPES, photographs_for_split, random_crop, random_region_mask

AUTHENTIC, SPLICED, COPY_MOVED, REMOVED, RETOUCHED, GENERATED = range(len(MANIPULATION_CLASSES))

MANIPULATION_FAMILIES = ("splice", "copy_move", "removal", "retouch", "double_jpeg", "generated_region")
FAMILY_CLASS = {
    "splice": SPLICED, "copy_move": COPY_MOVED, "removal": REMOVED, "retouch": RETOUCHED,
    "double_jpeg": SPLICED, "generated_region": GENERATED,
}
SAMPLES_FILE = "samples.csv"  # one row per image: file, mask, families, photo, host, donors, details, chain, split
# A global resize after the edit resamples host and donor alike and hides the splice's own resampling: resize a
# quarter of the samples (a classifier's chain resizes half), so most keep the local difference a scan can see.
MANIPULATION_POST_PROCESSING = PostProcessing(resize_probability=0.25)


@dataclass(frozen=True)
class PhotoSampling:
    """How a host or donor is cut from a photograph."""

    native_probability: float = 0.5  # a crop at native resolution (no resampling); otherwise a rescaled crop
    camera_jpeg_probability: float = 0.5  # the whole photograph JPEG-compressed first, as a camera would
    camera_jpeg_quality: tuple[int, int] = (75, 95)
    # the whole photograph shot through a capture condition first (forensics.generators; off by default), so a
    # frame sharpened or re-toned all over is authentic and only a local change reads as an edit
    capture_conditions: CaptureConditions = CaptureConditions()

    def camera_photo(self, rng: np.random.Generator, photo: np.ndarray) -> tuple[np.ndarray, str]:
        """The photograph as a camera JPEG (`camera_jpeg_probability` of the time), else unchanged, after any
        capture condition; with a note."""
        photo, shot = capture(rng, photo, self.capture_conditions)
        prefix = f"{shot[len('capture '):]}, " if shot else ""
        if rng.random() >= self.camera_jpeg_probability:
            return photo, f"{prefix}pristine"
        quality = int(rng.integers(self.camera_jpeg_quality[0], self.camera_jpeg_quality[1] + 1))
        return jpeg_on_shifted_grid(photo, quality, 0, 0), f"{prefix}camera jpeg {quality}"

    def crop(self, rng: np.random.Generator, photo: np.ndarray, size: int) -> tuple[np.ndarray, str]:
        """A size x size crop: native pixels (`native_probability`, when the photograph is large enough) or a
        rescaled crop (forensics.synthetic.random_crop); with a note saying which."""
        if rng.random() < self.native_probability:
            native = native_crop(rng, photo, size)
            if native is not None:
                return native, "native crop"
        return random_crop(rng, photo, size), "rescaled crop"


INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "lanczos": Image.LANCZOS, "box": Image.BOX}
REGION_SHAPES = (*MASK_SHAPES, "superpixels", "strokes")
STANDARD_REGION_SHARES = (0.03, 0.30)


@dataclass(frozen=True)
class ManipulationProcedures:
    """How widely each family's edit is drawn. The defaults are the `standard` recipe; `PROCEDURES` names the sets."""

    region_shapes: tuple[str, ...] = MASK_SHAPES  # of REGION_SHAPES; MASK_SHAPES draws as forensics.synthetic does
    # the share of the image a region covers: the standard 3-30 % uniformly, as forensics.synthetic draws it; any other
    # range log-uniformly, as evenly over small objects as over large areas
    region_shares: tuple[float, float] = STANDARD_REGION_SHARES
    resample_probability: float = 0.5  # a splice's donor resampled before the paste
    resample_factors: tuple[float, float] | None = None  # uniform (low, high); None: 0.6-0.9 or 1.15-1.6, never near 1
    donor_interpolations: tuple[str, ...] = ("bicubic", "bilinear")  # keys of INTERPOLATIONS
    donor_rotation_probability: float = 0.0  # the resampled donor also rotated by up to `max_rotation` degrees
    donor_jpeg_probability: float = 0.0  # the donor JPEG-compressed (quality 50-95, shifted grid) before the paste
    max_rotation: float = 15.0
    copy_move_transform_probability: float = 0.3  # the copied region rescaled (and rotated) before the move
    copy_move_scales: tuple[float, float] = (0.85, 1.2)
    copy_move_rotation_probability: float = 0.0  # of the transformed copies, the share also rotated
    inpainting: tuple[str, ...] = ("telea", "navier-stokes")  # and "biharmonic" (scikit-image)
    retouches: tuple[str, ...] = ("blur", "sharpen", "noise", "brightness")  # and "median", "saturation"

    def region(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """A boolean mask of one region to edit in `image`: a share of it drawn from `region_shares` (brush strokes
        are as wide and long as they fall)."""
        height, width = image.shape[:2]
        if self.region_shapes == MASK_SHAPES and self.region_shares == STANDARD_REGION_SHARES:
            return random_region_mask(rng, height, width)  # uniform in 3-30 %, as the standard recipe always drew
        shape = _pick(rng, self.region_shapes)
        if shape == "strokes":
            return stroke_region_mask(rng, height, width)
        share = float(np.exp(rng.uniform(*np.log(self.region_shares))))
        if shape == "superpixels":
            return superpixel_region_mask(rng, image, share)
        return random_region_mask(rng, height, width, shape, share)

    def resample_factor(self, rng: np.random.Generator) -> float:
        if self.resample_factors is None:
            return float(rng.choice([rng.uniform(0.6, 0.9), rng.uniform(1.15, 1.6)]))
        return float(rng.uniform(*self.resample_factors))


STANDARD_PROCEDURES = ManipulationProcedures()
PROCEDURES = {
    "standard": STANDARD_PROCEDURES,
    "small-regions": ManipulationProcedures(region_shares=(0.005, 0.30)),  # standard, with regions from 0.5 %
    "varied": ManipulationProcedures(
        region_shapes=REGION_SHAPES, region_shares=(0.005, 0.30), resample_probability=0.7, resample_factors=(0.5, 2.0),
        donor_interpolations=tuple(INTERPOLATIONS), donor_rotation_probability=0.3, donor_jpeg_probability=0.3,
        copy_move_transform_probability=0.5, copy_move_scales=(0.7, 1.4), copy_move_rotation_probability=0.5,
        inpainting=("telea", "navier-stokes", "biharmonic"),
        retouches=("blur", "sharpen", "noise", "brightness", "median", "saturation"),
    ),
}
DEFAULT_PROCEDURES = "standard"  # what the shipped segmenter trained on


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """One of `options`, uniformly, from one `rng.random()` draw (two options: the first when it is below 0.5)."""
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def superpixel_region_mask(rng: np.random.Generator, image: np.ndarray, share: float = 0.1) -> np.ndarray:
    """A region that follows the picture's own edges, as a cut-out object does: neighbouring SLIC superpixels of
    `image` merged from a random one until they cover `share` of it (a random geometric region where they cannot)."""
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import slic

    height, width = image.shape[:2]
    target = share * height * width
    segments = slic(image, n_segments=int(rng.integers(40, 160)), compactness=float(rng.uniform(5.0, 20.0)),
                    start_label=0, channel_axis=-1)
    mask = segments == segments[int(rng.integers(height)), int(rng.integers(width))]
    while mask.sum() < target:
        neighbours = np.unique(segments[binary_dilation(mask) & ~mask])
        if len(neighbours) == 0:
            break
        mask |= segments == neighbours[int(rng.integers(len(neighbours)))]
    if mask.sum() < 16 or mask.mean() > 0.45:
        return random_region_mask(rng, height, width)
    return mask


def stroke_region_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One to three brush strokes (thick polylines with rounded joints), as a user paints a region to remove."""
    from PIL import ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    side = min(height, width)
    for _ in range(int(rng.integers(1, 4))):
        point = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        points = [tuple(point)]
        for _ in range(int(rng.integers(2, 6))):
            point = np.clip(point + rng.normal(0, 0.2 * side, 2), 0, [width - 1, height - 1])
            points.append(tuple(point))
        stroke = int(rng.integers(max(4, side // 40), max(6, side // 8)))
        draw.line(points, fill=255, width=stroke, joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            draw.ellipse([x - stroke / 2, y - stroke / 2, x + stroke / 2, y + stroke / 2], fill=255)
    mask = np.asarray(canvas) > 127
    return mask if mask.sum() >= 16 else random_region_mask(rng, height, width)


def native_crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray | None:
    """A size x size crop at native resolution at a random position (randomly flipped), or None when the
    photograph is smaller than `size`."""
    height, width = photo.shape[:2]
    if height < size or width < size:
        return None
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    crop = photo[top : top + size, left : left + size]
    return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)


def _alpha(rng: np.random.Generator, mask: np.ndarray, feather_probability: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Blend weights for pasting over `mask` (feathered edges half the time) and the mask where the paste dominates."""
    alpha = mask.astype(np.float32)
    if rng.random() < feather_probability:
        radius = float(rng.uniform(0.8, 3.0))
        alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0
        return alpha, alpha >= 0.5
    return alpha, mask


def _blend(target: np.ndarray, source: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    mixed = target.astype(np.float32) * (1 - alpha[..., None]) + source.astype(np.float32) * alpha[..., None]
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def match_colours(source: np.ndarray, target: np.ndarray, source_mask: np.ndarray, target_mask: np.ndarray) -> np.ndarray:
    """`source` with each channel's mean and spread over `source_mask` moved to the target's over `target_mask`."""
    source_pixels, target_pixels = source[source_mask].astype(np.float32), target[target_mask].astype(np.float32)
    if len(source_pixels) < 2 or len(target_pixels) < 2:
        return source
    scale = (target_pixels.std(0) + 1.0) / (source_pixels.std(0) + 1.0)
    matched = (source.astype(np.float32) - source_pixels.mean(0)) * scale + target_pixels.mean(0)
    return np.clip(matched + 0.5, 0, 255).astype(np.uint8)


def _ring(mask: np.ndarray, width: int = 6) -> np.ndarray:
    """The pixels just outside `mask` (its surroundings, for colour matching)."""
    grown = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * width + 1))) > 127
    return grown & ~mask


def splice(rng: np.random.Generator, image: np.ndarray, donor_photo: np.ndarray,
           sampling: PhotoSampling = PhotoSampling(),
           procedures: ManipulationProcedures = STANDARD_PROCEDURES) -> tuple[np.ndarray, np.ndarray, str]:
    """Paste a region cut from another photograph; returns (image, bool mask, what was done)."""
    height, width = image.shape[:2]
    notes = []
    if rng.random() < procedures.resample_probability:  # its pixels went through an interpolation the target's did not
        factor = procedures.resample_factor(rng)
        rotation = 0.0
        if procedures.donor_rotation_probability and rng.random() < procedures.donor_rotation_probability:
            rotation = float(rng.uniform(-procedures.max_rotation, procedures.max_rotation))
        margin = 1.45 if rotation else 1.0  # a larger cut, so that the rotated corners fall outside the crop
        donor, cut_note = sampling.crop(rng, donor_photo, max(16, int(round(height * margin / factor))))
        interpolation = _pick(rng, procedures.donor_interpolations)
        size = (int(round(width * margin)), int(round(height * margin)))
        donor = Image.fromarray(donor).resize(size, INTERPOLATIONS[interpolation])
        if rotation:
            donor = donor.rotate(rotation, Image.BICUBIC)
            left, top = (size[0] - width) // 2, (size[1] - height) // 2
            donor = donor.crop((left, top, left + width, top + height))
        donor = np.asarray(donor)
        notes += [f"donor {cut_note}", f"resampled {factor:.2f}"]
        if procedures.donor_interpolations != STANDARD_PROCEDURES.donor_interpolations:
            notes[-1] += f" ({interpolation})"
        if rotation:
            notes.append(f"rotated {rotation:.1f} degrees")
    else:
        donor, cut_note = sampling.crop(rng, donor_photo, height)
        notes.append(f"donor {cut_note}")
    if donor.shape[:2] != (height, width):
        donor = np.asarray(Image.fromarray(donor).resize((width, height), Image.BILINEAR))
    if procedures.donor_jpeg_probability and rng.random() < procedures.donor_jpeg_probability:
        quality = int(rng.integers(50, 96))
        donor = jpeg_on_shifted_grid(donor, quality, *(int(v) for v in rng.integers(0, 8, 2)))
        notes.append(f"donor jpeg {quality}")
    mask = procedures.region(rng, donor)  # superpixels follow the donor's edges, as a cut-out object does
    if rng.random() < 0.5:
        donor = match_colours(donor, image, mask, _ring(mask))
        notes.append("colour matched")
    alpha, mask = _alpha(rng, mask)
    notes.append("feathered" if alpha.dtype == np.float32 and ((alpha > 0) & (alpha < 1)).any() else "hard edge")
    return _blend(image, donor, alpha), mask, ", ".join(notes)


def copy_move(rng: np.random.Generator, image: np.ndarray,
              procedures: ManipulationProcedures = STANDARD_PROCEDURES) -> tuple[np.ndarray, np.ndarray, str]:
    """Copy a region of the image elsewhere in it (optionally rescaled and rotated); the mask marks the destination."""
    height, width = image.shape[:2]
    for _ in range(10):
        source_mask = procedures.region(rng, image)
        rows, columns = np.nonzero(source_mask)
        shift_y = int(rng.integers(-rows.min(), height - rows.max()))
        shift_x = int(rng.integers(-columns.min(), width - columns.max()))
        if abs(shift_y) + abs(shift_x) >= 8:
            break
    source = image
    note = "shifted"
    if rng.random() < procedures.copy_move_transform_probability:  # rescaled about the region's centre before the move
        factor = float(rng.uniform(*procedures.copy_move_scales))
        angle = 0.0
        if procedures.copy_move_rotation_probability and rng.random() < procedures.copy_move_rotation_probability:
            angle = float(rng.uniform(-procedures.max_rotation, procedures.max_rotation))
        centre_y, centre_x = rows.mean(), columns.mean()
        cos, sin = np.cos(np.radians(angle)) / factor, np.sin(np.radians(angle)) / factor
        # PIL maps each output pixel back to its source: the inverse of rotating by `angle` and scaling by `factor`
        matrix = (cos, sin, centre_x - cos * centre_x - sin * centre_y, -sin, cos, centre_y + sin * centre_x - cos * centre_y)
        source = np.asarray(Image.fromarray(image).transform((width, height), Image.AFFINE, matrix, Image.BILINEAR))
        source_mask = np.asarray(Image.fromarray(source_mask.astype(np.uint8) * 255).transform(
            (width, height), Image.AFFINE, matrix, Image.NEAREST)) > 127
        note = f"scaled {factor:.2f}" + (f", rotated {angle:.1f} degrees" if angle else "")
    moved = np.roll(source, (shift_y, shift_x), axis=(0, 1))
    mask = np.roll(source_mask, (shift_y, shift_x), axis=(0, 1))
    alpha, mask = _alpha(rng, mask, 0.4)
    return _blend(image, moved, alpha), mask, note


def removal(rng: np.random.Generator, image: np.ndarray,
            procedures: ManipulationProcedures = STANDARD_PROCEDURES) -> tuple[np.ndarray, np.ndarray, str]:
    """Remove a region by inpainting it from its surroundings (OpenCV Telea or Navier-Stokes, scikit-image
    biharmonic)."""
    import cv2

    for _ in range(5):  # large holes inpaint to flat smears: keep removed objects object-sized
        mask = procedures.region(rng, image)
        if mask.mean() <= 0.2:
            break
    name = _pick(rng, procedures.inpainting)
    if name == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        filled = np.clip(inpaint_biharmonic(image, mask, channel_axis=-1) * 255 + 0.5, 0, 255).astype(np.uint8)
        return filled, mask, "inpainted (biharmonic)"
    method = {"telea": cv2.INPAINT_TELEA, "navier-stokes": cv2.INPAINT_NS}[name]
    radius = int(rng.integers(3, 8))
    filled = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8) * 255, radius, method)
    return np.asarray(filled, dtype=np.uint8), mask, f"inpainted ({name}, radius {radius})"


def retouch(rng: np.random.Generator, image: np.ndarray,
            procedures: ManipulationProcedures = STANDARD_PROCEDURES) -> tuple[np.ndarray, np.ndarray, str]:
    """Blur, sharpen, add noise to, brighten/darken, median-filter or (de)saturate one region."""
    mask = procedures.region(rng, image)
    picture = Image.fromarray(image)
    operation = str(rng.choice(list(procedures.retouches)))
    if operation == "blur":
        edited = np.asarray(picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.2, 3.5)))))
    elif operation == "sharpen":
        edited = np.asarray(picture.filter(ImageFilter.UnsharpMask(radius=float(rng.uniform(1.0, 3.0)),
                                                                   percent=int(rng.integers(120, 300)), threshold=1)))
    elif operation == "noise":
        noisy = image.astype(np.float32) + rng.normal(0.0, float(rng.uniform(5.0, 14.0)), image.shape)
        edited = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    elif operation == "median":
        edited = np.asarray(picture.filter(ImageFilter.MedianFilter(int(rng.choice([3, 5])))))
    elif operation == "saturation":
        from PIL import ImageEnhance

        factor = float(rng.choice([rng.uniform(0.3, 0.7), rng.uniform(1.4, 2.0)]))
        edited = np.asarray(ImageEnhance.Color(picture).enhance(factor))
    else:
        gain, bias = float(rng.choice([rng.uniform(0.65, 0.85), rng.uniform(1.15, 1.4)])), float(rng.uniform(-12, 12))
        edited = np.clip(image.astype(np.float32) * gain + bias + 0.5, 0, 255).astype(np.uint8)
    alpha, mask = _alpha(rng, mask, 0.6)
    return _blend(image, edited, alpha), mask, operation


def jpeg_on_shifted_grid(image: np.ndarray, quality: int, shift_y: int, shift_x: int) -> np.ndarray:
    """`image` after one JPEG at `quality` whose 8x8 grid is shifted by (shift_y, shift_x) pixels."""
    padded = np.pad(image, ((shift_y, 0), (shift_x, 0), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    Image.fromarray(padded).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))[shift_y:, shift_x:]


def double_jpeg(rng: np.random.Generator, image: np.ndarray,
                procedures: ManipulationProcedures = STANDARD_PROCEDURES) -> tuple[np.ndarray, np.ndarray, str]:
    """Replace a region with itself JPEG-compressed on a grid shifted by 1-7 pixels (misaligned double JPEG)."""
    mask = procedures.region(rng, image)
    shift_y, shift_x = (int(v) for v in rng.integers(1, 8, 2))
    quality = int(rng.integers(50, 86))
    compressed = jpeg_on_shifted_grid(image, quality, shift_y, shift_x)
    alpha, mask = _alpha(rng, mask, 0.3)
    return _blend(image, compressed, alpha), mask, f"jpeg {quality} on a grid shifted ({shift_y}, {shift_x})"


def generated_region(rng: np.random.Generator, image: np.ndarray,
                     procedures: ManipulationProcedures = STANDARD_PROCEDURES) -> tuple[np.ndarray, np.ndarray, str]:
    """Re-draw one region with a generator family of forensics.generators (a stand-in for generative fill)."""
    from forensics.generators import GENERATOR_FAMILIES, generate

    family = str(rng.choice(GENERATOR_FAMILIES))
    mask = procedures.region(rng, image)
    alpha, mask = _alpha(rng, mask, 0.6)
    return _blend(image, generate(rng, image, family), alpha), mask, family


def manipulate(
    rng: np.random.Generator, image: np.ndarray, family: str, donor_photo: np.ndarray | None = None,
    sampling: PhotoSampling = PhotoSampling(), procedures: ManipulationProcedures = STANDARD_PROCEDURES,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Apply one family to an (H, W, 3) uint8 image; returns (image, bool mask of the edited pixels, details).
    `sampling` cuts a splice's donor from `donor_photo`; `procedures` says how widely the edit is drawn."""
    edits: dict[str, Callable] = {"copy_move": copy_move, "removal": removal, "retouch": retouch,
                                  "double_jpeg": double_jpeg, "generated_region": generated_region}
    if family == "splice":
        if donor_photo is None:
            raise ValueError("The splice family needs a donor photograph (another photo of the same split).")
        return splice(rng, image, donor_photo, sampling, procedures)
    if family not in edits:
        raise ValueError(f"Wrong manipulation family `{family}`, supported families: {list(MANIPULATION_FAMILIES)}")
    return edits[family](rng, image, procedures)


def write_manipulation_dataset(
    directory: str | Path,
    n: int,
    seed: int,
    size: int = 256,
    split: str = "train",
    families: tuple[str, ...] | None = None,
    authentic_fraction: float = AUTHENTIC_FRACTION,
    second_edit_probability: float = 0.25,
    post_processing: PostProcessing = MANIPULATION_POST_PROCESSING,
    sampling: PhotoSampling = PhotoSampling(),
    package_photographs: str | Path | None = None,
    procedures: ManipulationProcedures = STANDARD_PROCEDURES,
) -> dict[str, int]:
    """A multi-class segmenter dataset: `images/<stem>.<jpg|webp|png>` and `masks/<stem>.png` holding class ids.

    Each non-authentic image gets one family's edit (families taken in turn, so
    they are balanced) and, with `second_edit_probability`, a second edit of
    another family on top (its pixels take the later class), so a model learns
    types per pixel, not per image. Hosts and donors are cut by `sampling`
    (native or rescaled, from camera-JPEG or pristine photographs); `procedures` says how widely each edit is
    drawn (`PROCEDURES`). Then the post-processing chain of
    forensics.generators runs on every image (authentic ones too). Images are
    `size` px squares before that chain's resize. `samples.csv` records every
    image's families, photographs and chain. `package_photographs`: a folder of
    forensics.package_photographs whose photographs of `split` join scikit-image's.
    Returns counts per class and family.
    """
    from forensics.generators import post_process

    families = tuple(families or MANIPULATION_FAMILIES)
    unknown = sorted(set(families) - set(MANIPULATION_FAMILIES))
    if unknown:
        raise ValueError(f"Wrong manipulation families {unknown}, supported families: {list(MANIPULATION_FAMILIES)}")
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    photos = photographs_for_split(split, package_photographs)
    if len(photos) < 2:
        raise ValueError(f"Split `{split}` has fewer than two photographs; a splice needs a donor.")
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(parents=True, exist_ok=True)
    counts = {"authentic": 0, **{family: 0 for family in families}}
    rows, edited = [], 0
    for index in range(n):
        target_index = int(rng.integers(len(photos)))
        name, photo = photos[target_index]
        camera, camera_note = sampling.camera_photo(rng, photo)
        image, crop_note = sampling.crop(rng, camera, size)
        mask = np.zeros((size, size), np.uint8)
        applied, donors, details = [], [], []
        if rng.random() >= authentic_fraction:
            chosen = [families[edited % len(families)]]
            edited += 1
            if len(families) > 1 and rng.random() < second_edit_probability:
                chosen.append(str(rng.choice([f for f in families if f != chosen[0]])))
            for family in chosen:
                donor = None
                if family == "splice":
                    donor_name, donor = photos[(target_index + 1 + int(rng.integers(len(photos) - 1))) % len(photos)]
                    donor, donor_camera = sampling.camera_photo(rng, donor)
                    donors.append(donor_name)
                image, region, detail = manipulate(rng, image, family, donor, sampling, procedures)
                if donor is not None:
                    detail += f" (donor photograph {donor_camera})"
                mask[region] = FAMILY_CLASS[family]
                applied.append(family)
                details.append(f"{family}: {detail}")
                counts[family] += 1
        else:
            counts["authentic"] += 1
        data, suffix, chain = post_process(rng, image, _chain_size(rng, size, post_processing), post_processing)
        final = Image.open(io.BytesIO(data)).size
        stem = f"{seed}_{index:05d}_{name}_{'+'.join(applied) or 'authentic'}"
        (directory / "images" / f"{stem}{suffix}").write_bytes(data)
        Image.fromarray(mask).resize(final, Image.NEAREST).save(directory / "masks" / f"{stem}.png")
        rows.append({"file": f"images/{stem}{suffix}", "mask": f"masks/{stem}.png", "families": "+".join(applied),
                     "photo": name, "host": f"{crop_note} of a {camera_note} photograph", "donors": "+".join(donors),
                     "details": "; ".join(details), "chain": chain, "split": split})
    with open(directory / SAMPLES_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    (directory / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(MANIPULATION_CLASSES)))
    return counts


def _chain_size(rng: np.random.Generator, size: int, config) -> tuple[int, int]:
    """The (width, height) the chain resizes a `size` px image to (its own size when this chain does not resize)."""
    side = max(16, int(round(size * config.draw_scale(rng))))
    return side, side
