"""Native-resolution analysis: tiles cover and blend back exactly, crops spread, memory stays bounded."""

from __future__ import annotations

import numpy as np
import pytest

from forensics.model_card import default_segmenter_card
from forensics.tiling import (
    blend_window,
    coarse_view,
    count_tiles,
    crop_origins,
    mean_of_scales,
    mean_over_mirrors,
    native_crops,
    plan_tiles,
    segmenter_inputs,
    segmenter_view,
    size_within_tile_cap,
    stitch_tiles,
    stitch_two_scales,
    tile_starts,
)

ODD_SIZES = [(1, 1), (1, 300), (37, 64), (64, 64), (65, 129), (200, 7), (301, 517)]


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 100, 127, 128, 129, 1000, 4097])
def test_tile_starts_cover_the_side_with_at_least_the_overlap(length):
    tile, overlap = 64, 16
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + tile >= length and (length <= tile or starts[-1] + tile == length)
    for before, after in zip(starts, starts[1:]):
        assert tile - (after - before) >= overlap  # neighbours share at least `overlap` pixels


def red_channel_probabilities(tiles: np.ndarray) -> np.ndarray:
    return tiles[..., 0].astype(np.float32) / 255.0


@pytest.mark.parametrize("height,width", ODD_SIZES)
def test_stitched_map_has_the_original_size_and_blends_back_exactly(height, width):
    rng = np.random.default_rng(height * 1000 + width)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    [(probabilities, plan)] = list(stitch_tiles([image], red_channel_probabilities, tile=32, overlap=8, max_tiles=10_000))
    assert probabilities.shape == (height, width) and plan.scale == 1.0
    np.testing.assert_allclose(probabilities, image[..., 0] / 255.0, atol=1e-6)


def test_a_forgery_in_one_corner_tile_is_found_there_at_full_resolution():
    height, width = 700, 900
    image = np.full((height, width, 3), 60, dtype=np.uint8)
    image[640:690, 850:897] = 250  # inside the bottom-right tile only

    def bright_pixels(tiles):
        return (tiles[..., 0] > 200).astype(np.float32)

    [(probabilities, plan)] = list(stitch_tiles([image], bright_pixels, tile=128, overlap=32, max_tiles=1000))
    assert plan.scale == 1.0 and probabilities.shape == (height, width)
    found = np.argwhere(probabilities >= 0.5)
    assert found.min(axis=0).tolist() == [640, 850] and found.max(axis=0).tolist() == [689, 896]
    assert int((probabilities >= 0.5).sum()) == 50 * 47


def test_tiles_of_many_images_share_batches_and_never_exceed_the_batch_size():
    images = [np.full((size, size, 3), size % 256, dtype=np.uint8) for size in (20, 300, 50, 130, 1)]
    seen = []

    def record(tiles):
        seen.append(len(tiles))
        return red_channel_probabilities(tiles)

    results = list(stitch_tiles(iter(images), record, tile=64, overlap=16, max_tiles=1000, tiles_per_batch=8))
    assert [r[0].shape for r in results] == [(20, 20), (300, 300), (50, 50), (130, 130), (1, 1)]
    for image, (probabilities, _) in zip(images, results):  # each map is its own image's, in order
        np.testing.assert_allclose(probabilities, image[..., 0] / 255.0, atol=1e-6)
    total = sum(count_tiles(i.shape[0], i.shape[1], 64, 16) for i in images)
    assert max(seen) <= 8 and sum(seen) == total
    assert seen[0] == 8  # the first small image's tile shares its batch with the next image's tiles


def test_a_very_large_image_is_reduced_by_the_smallest_factor_within_the_tile_cap():
    height, width = 20_000, 12_000
    tile, overlap, cap = 256, 32, 64
    fitted = size_within_tile_cap(height, width, tile, overlap, cap)
    assert count_tiles(*fitted, tile, overlap) <= cap
    one_more = max(fitted) + 1
    bigger = (round(height * one_more / height), round(width * one_more / height))
    assert count_tiles(*bigger, tile, overlap) > cap  # a pixel more on the long side would need more tiles
    plan = plan_tiles(height, width, tile, overlap, cap)
    assert plan.scale == pytest.approx(max(fitted) / height) and len(plan.origins) <= cap
    assert size_within_tile_cap(1000, 800, tile, overlap, cap) == (1000, 800)  # fits: native


def test_segmenter_view_keeps_native_pixels_unless_the_cap_needs_a_reduction():
    card = default_segmenter_card((64, 64)).replace(resize_mode="native_tiles", tile_overlap=16, max_tiles=9)
    small = np.zeros((100, 150, 3), np.uint8)
    view, scale = segmenter_view(card, small)
    assert view is small and scale == 1.0
    large = np.zeros((1000, 1500, 3), np.uint8)
    view, scale = segmenter_view(card, large)
    assert count_tiles(view.shape[0], view.shape[1], 64, 16) <= 9 and scale == pytest.approx(view.shape[1] / 1500, abs=2e-3)


def test_blend_window_is_positive_everywhere_and_one_in_the_middle():
    window = blend_window(64, 16)
    assert window.min() > 0 and window[32, 32] == 1.0 and window[0, 0] < window[8, 8] < window[16, 16]


def test_classifier_crops_are_spread_over_the_image_corners_and_centre():
    origins = crop_origins(512, 768, 128, 5)
    assert origins[0] == ((512 - 128) // 2, (768 - 128) // 2)
    assert {(0, 0), (0, 640), (384, 0), (384, 640)} <= set(origins)
    image = np.arange(512 * 768 * 3, dtype=np.uint32).reshape(512, 768, 3).astype(np.uint8)
    crops = native_crops(image, 128, 128, 5)
    assert crops.shape == (5, 128, 128, 3)
    np.testing.assert_array_equal(crops[1], image[:128, :128])  # native pixels, not resized


def test_an_image_smaller_than_a_crop_is_mirrored_not_enlarged():
    image = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    crops = native_crops(image, 32, 32, 3)
    assert crops.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(crops[0][:10, :20], image)


def test_multi_crop_classifier_averages_the_logits_of_its_crops(tiny_checkpoints):
    from forensics.inference import ClassifierPredictor

    classifier = ClassifierPredictor.from_checkpoint(tiny_checkpoints["classifier"], device=None)
    card = classifier.card.replace(resize_mode="native_crops", crops=4)
    classifier.card = card
    image = np.random.default_rng(1).integers(0, 256, (150, 210, 3), dtype=np.uint8)
    view = classifier.view(image)
    assert view.shape == (4, *card.input_size, 3)
    together = classifier.image_logits(view[None])[0]
    separately = classifier.image_logits(view).mean()
    assert together == pytest.approx(separately, abs=1e-4)


def test_segmenter_maps_are_the_same_whether_images_are_batched_together_or_alone(tiny_checkpoints):
    from forensics.inference import SegmenterPredictor

    segmenter = SegmenterPredictor.from_checkpoint(tiny_checkpoints["segmenter"], device=None)
    segmenter.card = segmenter.card.replace(resize_mode="native_tiles", tile_overlap=16)
    segmenter.tiles_per_batch = 5
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((90, 130, 3), (64, 64, 3), (7, 200, 3))]
    together = list(segmenter.probability_maps(images))
    alone = [next(segmenter.probability_maps([image])) for image in images]
    for image, joint, single in zip(images, together, alone):
        assert joint.shape == image.shape[:2]
        np.testing.assert_allclose(joint, single, atol=1e-4)


def test_coarse_view_shrinks_the_short_side_to_the_setting_and_skips_images_no_larger():
    image = np.zeros((300, 451, 3), dtype=np.uint8)
    assert coarse_view(image, 100).shape == (100, 150, 3)
    assert coarse_view(image, 300) is None and coarse_view(image, 400) is None
    assert coarse_view(np.zeros((1, 900, 3), dtype=np.uint8), 64) is None


def test_two_scale_maps_are_the_native_map_averaged_with_the_enlarged_coarse_map_image_by_image():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((90, 130, 3), (40, 40, 3), (150, 70, 3), (1, 1, 3))]
    sizes = []

    def red_channel_recording_batches(tiles):
        sizes.append(len(tiles))
        return red_channel_probabilities(tiles)

    results = list(stitch_two_scales(images, red_channel_recording_batches, tile=32, overlap=8, max_tiles=1000,
                                     coarse_short_side=48, tiles_per_batch=7))
    assert max(sizes) <= 7 and len(results) == len(images)
    for image, (combined, plan) in zip(images, results):
        [(native, _)] = stitch_tiles([image], red_channel_probabilities, tile=32, overlap=8, max_tiles=1000)
        assert combined.shape == image.shape[:2] and plan.scale == 1.0
        shrunk = coarse_view(image, 48)
        if shrunk is None:  # 40 x 40 and 1 x 1: nothing coarser to add
            np.testing.assert_allclose(combined, native, atol=1e-6)
            continue
        [(coarse, _)] = stitch_tiles([shrunk], red_channel_probabilities, tile=32, overlap=8, max_tiles=1000)
        np.testing.assert_allclose(combined, mean_of_scales(native, coarse), atol=1e-6)
        assert np.abs(combined - native).max() > 0.01  # the coarse pass changed the map


def test_mean_of_scales_averages_class_logits_channel_by_channel():
    native = np.stack([np.zeros((4, 6), np.float32), np.full((4, 6), 2.0, np.float32)])
    coarse = np.stack([np.full((2, 3), 4.0, np.float32), np.full((2, 3), -2.0, np.float32)])
    combined = mean_of_scales(native, coarse)
    assert combined.shape == (2, 4, 6)
    np.testing.assert_allclose(combined[0], 2.0)
    np.testing.assert_allclose(combined[1], 0.0)


def test_a_segmenter_card_with_a_coarse_pass_gives_each_image_its_own_two_scale_map_in_any_batching(tiny_checkpoints):
    from forensics.inference import SegmenterPredictor

    segmenter = SegmenterPredictor.from_checkpoint(tiny_checkpoints["segmenter"], device=None)
    native_card = segmenter.card.replace(resize_mode="native_tiles", tile_overlap=16)
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((90, 130, 3), (40, 64, 3), (150, 100, 3))]
    segmenter.card = native_card
    native = list(segmenter.probability_maps(images))
    segmenter.card = native_card.replace(coarse_short_side=48)
    segmenter.tiles_per_batch = 3
    together = list(segmenter.probability_maps(images))
    alone = [next(segmenter.probability_maps([image])) for image in images]
    for image, joint, single in zip(images, together, alone):
        assert joint.shape == image.shape[:2]
        np.testing.assert_allclose(joint, single, atol=1e-4)
    np.testing.assert_allclose(together[1], native[1], atol=1e-4)  # short side 40 <= 48: native pass only
    assert not np.allclose(together[0], native[0], atol=1e-3) and not np.allclose(together[2], native[2], atol=1e-3)


def column_and_row_logits(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, 3, H, W) logits that a mirror changes: each pixel's column, its row, and its red value."""
    count, height, width = batch.shape[:3]
    columns = np.broadcast_to(np.arange(width, dtype=np.float32), (count, height, width))
    rows = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], (count, height, width))
    return np.stack([columns, rows, batch[..., 0].astype(np.float32)], axis=1)


def test_mirror_views_line_each_logit_up_with_its_own_pixel_and_average_the_mirrors():
    rng = np.random.default_rng(5)
    batch = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    calls = []

    def recording(pixels):
        calls.append(len(pixels))
        return column_and_row_logits(pixels)

    alone = mean_over_mirrors(recording, batch, 1)
    np.testing.assert_array_equal(alone, column_and_row_logits(batch))
    left_right = mean_over_mirrors(recording, batch, 2)
    np.testing.assert_allclose(left_right[:, 0], 3.0)  # column c and its mirror 6 - c average to the middle
    np.testing.assert_array_equal(left_right[:, 1:], alone[:, 1:])  # rows untouched; red values back in place
    four = mean_over_mirrors(recording, batch, 4)
    np.testing.assert_allclose(four[:, 0], 3.0)
    np.testing.assert_allclose(four[:, 1], 2.0)
    np.testing.assert_array_equal(four[:, 2], alone[:, 2])
    assert calls == [3, 3, 3, 3, 3, 3, 3]  # one batch of the caller's size per view


def test_a_segmenter_card_with_mirror_views_averages_the_maps_of_the_image_and_its_mirror(tiny_checkpoints):
    from forensics.inference import SegmenterPredictor, segmenter_logit_maps

    segmenter = SegmenterPredictor.from_checkpoint(tiny_checkpoints["segmenter"], device=None)
    tile = segmenter.card.input_size[0]
    segmenter.card = segmenter.card.replace(resize_mode="native_tiles", tile_overlap=16)
    image = np.random.default_rng(6).integers(0, 256, (tile, tile, 3), dtype=np.uint8)  # one tile: tile mirror = image mirror
    [plain, mirrored] = list(segmenter_logit_maps(segmenter, [image, np.ascontiguousarray(image[:, ::-1])], class_maps=True))
    segmenter.card = segmenter.card.replace(mirror_views=2)
    [both] = list(segmenter_logit_maps(segmenter, [image], class_maps=True))
    np.testing.assert_allclose(both, (plain + mirrored[..., ::-1]) / 2, atol=1e-4)
    assert not np.allclose(both, plain, atol=1e-3)


def test_segmenter_inputs_count_tiles_coarse_tiles_and_mirror_views():
    card = default_segmenter_card((32, 32)).replace(resize_mode="native_tiles", tile_overlap=8)
    tiles = count_tiles(100, 60, 32, 8)
    assert segmenter_inputs(card, 100, 60) == tiles
    assert segmenter_inputs(card.replace(mirror_views=4), 100, 60) == 4 * tiles
    coarse = count_tiles(*coarse_view(np.zeros((100, 60, 3), np.uint8), 40).shape[:2], 32, 8)
    assert segmenter_inputs(card.replace(coarse_short_side=40, mirror_views=2), 100, 60) == 2 * (tiles + coarse)
    assert segmenter_inputs(card.replace(resize_mode="resize", mirror_views=2), 100, 60) == 2  # one view, mirrored
