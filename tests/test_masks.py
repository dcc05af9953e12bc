"""Masks: original-resolution upsampling and COCO RLE that pycocotools decodes to the same pixels."""

import numpy as np
from pycocotools import mask as coco_mask

from forensics.masks import decode_mask, encode_mask, manipulation_score, mask_at_original_size, summarise_mask


def test_rle_round_trip_through_pycocotools():
    mask = np.zeros((37, 53), bool)
    mask[5:20, 10:40] = True
    rle = encode_mask(mask)
    assert rle.size == (37, 53)
    decoded = coco_mask.decode(rle.to_coco())
    assert decoded.shape == (37, 53)
    assert np.array_equal(decoded.astype(bool), mask)
    assert np.array_equal(decode_mask(rle.to_row()).astype(bool), mask)


def test_summary_is_at_original_resolution_with_area_and_bbox():
    probabilities = np.zeros((16, 16), np.float32)
    probabilities[4:8, 8:12] = 0.9
    summary = summarise_mask(probabilities, height=160, width=320, threshold=0.5)
    decoded = decode_mask(summary.rle)
    assert decoded.shape == (160, 320)
    assert np.array_equal(decoded.astype(bool), mask_at_original_size(probabilities, 160, 320, 0.5))
    x, y, w, h = summary.bbox
    assert 150 <= x <= 170 and 30 <= y <= 50 and 60 <= w <= 100 and 30 <= h <= 50
    assert abs(summary.area_fraction - decoded.mean()) < 1e-6


def test_empty_mask_encodes_and_has_zero_area():
    summary = summarise_mask(np.zeros((8, 8), np.float32), 20, 30, 0.5)
    assert summary.area_fraction == 0.0
    assert decode_mask(summary.rle).shape == (20, 30) and decode_mask(summary.rle).sum() == 0


def test_empty_mask_shortcut_gives_the_same_rle_and_box_as_encoding_zeros():
    summary = summarise_mask(np.full((8, 8), 0.1, np.float32), 1081, 1439, 0.5)
    zeros = encode_mask(np.zeros((1081, 1439), bool))
    assert summary.rle == zeros
    assert summary.bbox == tuple(int(v) for v in coco_mask.toBbox(zeros.to_coco()))


def test_manipulation_score_ignores_a_single_hot_pixel_but_not_a_region():
    quiet = np.zeros((100, 100), np.float32)
    quiet[0, 0] = 1.0
    region = np.zeros((100, 100), np.float32)
    region[10:30, 10:30] = 0.95
    assert manipulation_score(quiet) < 0.1
    assert manipulation_score(region) > 0.9


def test_upsampled_probabilities_equal_pillows_bilinear_resize_enlarging_and_shrinking():
    from PIL import Image

    from forensics.masks import upsample_probabilities

    rng = np.random.default_rng(7)
    for source, target in [((128, 128), (1000, 1500)), ((37, 53), (301, 977)), ((1, 1), (9, 13)),
                           ((128, 128), (64, 64)), ((128, 128), (129, 127)), ((5, 7), (1, 1))]:
        probabilities = rng.random(source).astype(np.float32)
        expected = np.asarray(Image.fromarray(probabilities, mode="F").resize(target[::-1], Image.BILINEAR))
        resized = upsample_probabilities(probabilities, *target)
        assert resized.shape == target and resized.dtype == np.float32
        np.testing.assert_allclose(resized, expected, atol=1e-6)
