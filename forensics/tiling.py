"""Native-resolution analysis: crops spread over an image, and overlapping tiles stitched back into one map.

Resizing a 1600 px photograph to a model's 128 px erases the resampling, noise
and JPEG traces that forensic models key on. Here the classifier scores several
native-resolution crops per image, and the segmenter runs on overlapping tiles
whose outputs are blended (a linear ramp across each overlap) into a probability
map at the image's own size. The scan, the HTTP endpoint, evaluation and
calibration all come through this module, so they preprocess alike.

Memory stays bounded whatever the image size: images with more tiles than the
card's `max_tiles` are first reduced by the smallest factor that fits (the row
records the factor), and tiles of many images stream through the model in
fixed-size chunks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from forensics.model_card import NATIVE_CROPS, NATIVE_TILES, ModelCard

TILES_PER_BATCH = 16  # tiles per model call: bounds the memory of a stitch whatever the image size


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering [0, length) with at least `overlap` pixels shared.

    The tiles are spread evenly so the first starts at 0 and the last ends at
    `length` (no tile hangs over the edge); a side shorter than one tile gets one
    tile, padded when it is cut out.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"tile must be >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(top, left) of every tile, row by row."""
    return [(top, left) for top in tile_starts(height, tile, overlap) for left in tile_starts(width, tile, overlap)]


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def size_within_tile_cap(height: int, width: int, tile: int, overlap: int, max_tiles: int) -> tuple[int, int]:
    """The largest (height, width) with the image's aspect ratio that needs at most `max_tiles` tiles.

    The image's own size when it fits already; otherwise the smallest reduction
    that fits (binary search on the long side: the tile count only grows with it).
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    if count_tiles(height, width, tile, overlap) <= max_tiles:
        return height, width
    long_side = max(height, width)

    def scaled(side: int) -> tuple[int, int]:
        factor = side / long_side
        return max(1, round(height * factor)), max(1, round(width * factor))

    low, high = 1, long_side  # count_tiles(scaled(low)) <= max_tiles < count_tiles(scaled(high))
    while high - low > 1:
        middle = (low + high) // 2
        if count_tiles(*scaled(middle), tile, overlap) <= max_tiles:
            low = middle
        else:
            high = middle
    return scaled(low)


def cut(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The (height, width) window at (top, left); mirrored at the edges where the image is smaller."""
    window = image[top : top + height, left : left + width]
    pad_bottom, pad_right = height - window.shape[0], width - window.shape[1]
    if pad_bottom or pad_right:
        padding = [(0, pad_bottom), (0, pad_right)] + [(0, 0)] * (image.ndim - 2)
        window = np.pad(window, padding, mode="symmetric")
    return window


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 weights: 1 in the middle, a linear ramp over `overlap` pixels at each side.

    Never zero, so a pixel at the image border (covered by one tile) keeps its value.
    """
    ramp = np.ones(tile, dtype=np.float32)
    if overlap:
        steps = (np.arange(overlap, dtype=np.float32) + 1.0) / (overlap + 1.0)
        ramp[:overlap] = steps
        ramp[tile - overlap :] = np.minimum(ramp[tile - overlap :], steps[::-1])
    return np.outer(ramp, ramp)


def crop_origins(height: int, width: int, crop: int, count: int) -> list[tuple[int, int]]:
    """(top, left) of exactly `count` crops: the centre crop, then the rest on a near-square grid
    spread edge to edge (for 5: the centre and the four corners).

    An image too small for `count` distinct crops repeats origins.
    """
    if count < 1:
        raise ValueError(f"crops must be >= 1, got {count}")
    centre = (max(0, (height - crop) // 2), max(0, (width - crop) // 2))
    others = count - 1
    if others == 0:
        return [centre]
    rows = max(1, round(math.sqrt(others * height / max(width, 1))))
    columns = max(1, math.ceil(others / rows))
    grid = [(top, left) for top in _spread(height, crop, rows) for left in _spread(width, crop, columns)]
    grid = list(dict.fromkeys(origin for origin in grid if origin != centre)) or [centre]
    if len(grid) >= others:  # keep `others`, evenly chosen over the grid
        chosen = np.linspace(0, len(grid) - 1, others).round().astype(int)
        return [centre] + [grid[index] for index in chosen.tolist()]
    return [centre] + [grid[index % len(grid)] for index in range(others)]


def _spread(length: int, crop: int, count: int) -> list[int]:
    if length <= crop or count == 1:
        return [max(0, (length - crop) // 2)]
    return list(dict.fromkeys(round(index * (length - crop) / (count - 1)) for index in range(count)))


@dataclass(frozen=True)
class TilePlan:
    """How one image is tiled: the size it is analysed at, and its tile origins at that size."""

    height: int
    width: int
    analysed_height: int
    analysed_width: int
    origins: tuple[tuple[int, int], ...]

    @property
    def scale(self) -> float:
        """Analysed size / original size along the long side (1.0 = native resolution)."""
        return max(self.analysed_height, self.analysed_width) / max(self.height, self.width)


def plan_tiles(height: int, width: int, tile: int, overlap: int, max_tiles: int) -> TilePlan:
    analysed_height, analysed_width = size_within_tile_cap(height, width, tile, overlap, max_tiles)
    origins = tuple(tile_grid(analysed_height, analysed_width, tile, overlap))
    return TilePlan(height, width, analysed_height, analysed_width, origins)


def at_analysis_size(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The image reduced to the plan's analysed size (unchanged at native resolution)."""
    if (plan.analysed_height, plan.analysed_width) == image.shape[:2]:
        return image
    resized = Image.fromarray(image).resize((plan.analysed_width, plan.analysed_height), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)


@dataclass
class StitchedMap:
    """A probability map being accumulated from blended tiles."""

    plan: TilePlan
    pending: int
    total: np.ndarray | None = None  # (H, W) or (C, H, W), shaped by the first tile
    weight: np.ndarray | None = None

    def add(self, origin: tuple[int, int], probabilities: np.ndarray, window: np.ndarray) -> None:
        top, left = origin
        if self.total is None:
            shape = (self.plan.analysed_height, self.plan.analysed_width)
            self.total = np.zeros(probabilities.shape[:-2] + shape, np.float32)
            self.weight = np.zeros(shape, np.float32)
        height = min(probabilities.shape[-2], self.plan.analysed_height - top)
        width = min(probabilities.shape[-1], self.plan.analysed_width - left)
        weights = window[:height, :width]
        self.total[..., top : top + height, left : left + width] += probabilities[..., :height, :width] * weights
        self.weight[top : top + height, left : left + width] += weights
        self.pending -= 1

    def result(self) -> np.ndarray:
        return self.total / self.weight


def stitch_tiles(
    images: Iterable[np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    tile: int,
    overlap: int,
    max_tiles: int,
    tiles_per_batch: int = TILES_PER_BATCH,
) -> Iterator[tuple[np.ndarray, TilePlan]]:
    """For each (H, W, 3) uint8 image, in order: its stitched probability map at the analysed size, and its plan.

    `predict` maps a (N, tile, tile, 3) uint8 batch to (N, tile, tile) or
    (N, C, tile, tile) probabilities. Tiles of consecutive images share batches of
    `tiles_per_batch`, so small images fill a batch together and a huge image is
    never held as tiles all at once: at most one batch of tiles and the maps of
    the images those tiles belong to are in memory.
    """
    window = blend_window(tile, overlap)
    pending: list[tuple[StitchedMap, tuple[int, int]]] = []
    batch: list[np.ndarray] = []
    in_progress: list[StitchedMap] = []

    def flush() -> None:
        probabilities = np.asarray(predict(np.stack(batch)), dtype=np.float32)
        for (stitched, origin), tile_probabilities in zip(pending, probabilities):
            stitched.add(origin, tile_probabilities, window)
        pending.clear()
        batch.clear()

    def finished() -> Iterator[tuple[np.ndarray, TilePlan]]:
        while in_progress and in_progress[0].pending == 0:
            done = in_progress.pop(0)
            yield done.result(), done.plan

    for image in images:
        plan = plan_tiles(image.shape[0], image.shape[1], tile, overlap, max_tiles)
        analysed = at_analysis_size(image, plan)
        stitched = None
        for origin in plan.origins:
            tile_pixels = cut(analysed, origin[0], origin[1], tile, tile)
            if stitched is None:
                stitched = _empty_map(plan, len(plan.origins))
                in_progress.append(stitched)
            batch.append(tile_pixels)
            pending.append((stitched, origin))
            if len(batch) == tiles_per_batch:
                flush()
                yield from finished()
    if batch:
        flush()
    yield from finished()


def _empty_map(plan: TilePlan, tiles: int) -> StitchedMap:
    return StitchedMap(plan, pending=tiles)


def coarse_size(height: int, width: int, short_side: int) -> tuple[int, int] | None:
    """(height, width) of an image shrunk so its short side is `short_side`; None when it is no longer than
    that already, so a coarse pass would only repeat the native one."""
    if short_side < 1 or min(height, width) <= short_side:
        return None
    factor = short_side / min(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def coarse_view(image: np.ndarray, short_side: int) -> np.ndarray | None:
    """The (H, W, 3) image shrunk (bilinear, antialiased) to coarse_size; None where that is None."""
    size = coarse_size(image.shape[0], image.shape[1], short_side)
    if size is None:
        return None
    return np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR), dtype=np.uint8)


def mean_of_scales(native: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """The mean of a native map and a coarse one enlarged (bilinear) to the native map's size; (H, W) or
    (C, H, W) logits. For class logits this is the geometric mean of the two passes' class probabilities."""
    from forensics.masks import upsample_probabilities

    height, width = native.shape[-2:]
    if coarse.ndim == 2:
        return (native + upsample_probabilities(coarse, height, width)) / 2
    enlarged = np.stack([upsample_probabilities(channel, height, width) for channel in coarse])
    return (native + enlarged) / 2


def stitch_two_scales(
    images: Iterable[np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    tile: int,
    overlap: int,
    max_tiles: int,
    coarse_short_side: int,
    tiles_per_batch: int = TILES_PER_BATCH,
) -> Iterator[tuple[np.ndarray, TilePlan]]:
    """stitch_tiles, with each image also analysed shrunk to `coarse_short_side` (coarse_view) and the two
    maps averaged at the native map's size (mean_of_scales). The coarse image follows its native one
    through the same tile batches, so memory stays bounded as in stitch_tiles; 0 = stitch_tiles alone."""
    if coarse_short_side <= 0:
        yield from stitch_tiles(images, predict, tile, overlap, max_tiles, tiles_per_batch)
        return
    has_coarse: deque[bool] = deque()  # per native image, in order: is its coarse image next in the stream?

    def native_then_coarse() -> Iterator[np.ndarray]:
        for image in images:
            plan = plan_tiles(image.shape[0], image.shape[1], tile, overlap, max_tiles)
            coarse = coarse_view(at_analysis_size(image, plan), coarse_short_side)
            has_coarse.append(coarse is not None)
            yield image
            if coarse is not None:
                yield coarse

    maps = stitch_tiles(native_then_coarse(), predict, tile, overlap, max_tiles, tiles_per_batch)
    for native, plan in maps:
        if has_coarse.popleft():
            coarse, _coarse_plan = next(maps)
            native = mean_of_scales(native, coarse)
        yield native, plan


def segmenter_inputs(card: ModelCard, height: int, width: int) -> int:
    """How many inputs the segmenter's model sees for a view of (height, width) at its analysed size: its
    tiles and those of its coarse pass when the card tiles, else one; times the card's mirror views."""
    if card.resize_mode != NATIVE_TILES:
        return card.mirror_views
    tiles = count_tiles(height, width, card.input_size[0], card.tile_overlap)
    coarse = coarse_size(height, width, card.coarse_short_side)
    if coarse is not None:
        tiles += count_tiles(*coarse, card.input_size[0], card.tile_overlap)
    return tiles * card.mirror_views


_MIRRORS = ((), (2,), (1,), (1, 2))  # image axes of an (N, H, W, 3) batch flipped by each mirror view, in order


def mean_over_mirrors(predict: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, views: int) -> np.ndarray:
    """`predict`'s (N, ..., H, W) logits for an (N, H, W, 3) batch, averaged over `views` mirror images of it
    (1: the batch alone; 2: and its left-right mirror; 4: and its top-bottom and double mirrors), each
    mirrored back first so every logit lines up with its pixel. One `predict` call per view, so a batch
    is never larger than the caller made it."""
    total = None
    for axes in _MIRRORS[:views]:
        logits = np.asarray(predict(np.ascontiguousarray(np.flip(pixels, axes) if axes else pixels)), dtype=np.float32)
        if axes:
            logits = np.flip(logits, tuple(axis - 3 for axis in axes))  # (1, 2) of NHWC are (-2, -1) of the logits
        total = logits if total is None else total + logits
    return total / views


def native_crops(image: np.ndarray, crop_height: int, crop_width: int, count: int) -> np.ndarray:
    """(count, crop_height, crop_width, 3) uint8 native-resolution crops spread over one (H, W, 3) image."""
    side = max(crop_height, crop_width)
    origins = crop_origins(image.shape[0], image.shape[1], side, count)
    return np.stack([cut(image, top, left, crop_height, crop_width) for top, left in origins])


def classifier_view(card: ModelCard, decoded: np.ndarray) -> np.ndarray:
    """decode_image's output for a classifier card -> what the classifier sees of one image.

    ``native_crops``: (crops, h, w, 3) crops spread over the full-resolution image;
    other modes: decode_image already made the (h, w, 3) input (resize or centre crop).
    """
    if card.resize_mode == NATIVE_CROPS:
        return native_crops(decoded, *card.input_size, card.crops)
    return decoded


def segmenter_view(card: ModelCard, decoded: np.ndarray) -> tuple[np.ndarray, float | None]:
    """decode_image's output for a segmenter card -> (the image the segmenter analyses, its scale).

    ``native_tiles``: the full-resolution image, reduced only when it would need more than
    the card's `max_tiles` tiles (scale < 1 then; 1.0 at native resolution). Other modes:
    decode_image's resized input, and scale None (a thumbnail, not a native analysis).
    """
    if card.resize_mode == NATIVE_TILES:
        plan = plan_tiles(decoded.shape[0], decoded.shape[1], card.input_size[0], card.tile_overlap, card.max_tiles)
        return at_analysis_size(decoded, plan), plan.scale
    return decoded, None
