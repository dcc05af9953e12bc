"""Multi-class segmenters: classes in the card, encoders, class-indexed masks, per-class metrics and scan output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from forensics.checkpoint import load_checkpoint, save_checkpoint
from forensics.masks import class_index_map, decode_mask, summarise_classes, summarise_mask
from forensics.model_card import ModelCard, default_segmenter_card
from forensics.models import SEGMENTER_ENCODERS, ModelBuildError, build_model
from forensics.training import AugmentConfig, DatasetError, TrainSettings, train_model
from forensics.training.datasets import ImageMaskPair, load_class_mask, load_mask

CLASSES = ("authentic", "spliced", "copy_moved", "removed")


def write_class_dataset(folder, count: int, size: int = 64, seed: int = 0) -> list[ImageMaskPair]:
    """Noise images whose rectangles are brightened (class 1), darkened (2) or blurred flat (3), with
    class-indexed PNG masks."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(count):
        pixels = rng.integers(40, 200, (size, size, 3)).astype(np.int16)
        mask = np.zeros((size, size), np.uint8)
        for class_id in (1, 2, 3):
            top, left = rng.integers(0, size - 20, 2)
            mask[top : top + 16, left : left + 16] = class_id
        pixels[mask == 1] += 50
        pixels[mask == 2] -= 40
        pixels[mask == 3] = 128
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "images" / f"{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{index}.png")
        pairs.append(ImageMaskPair(str(folder / "images" / f"{index}.png"), str(folder / "masks" / f"{index}.png")))
    return pairs


def multiclass_card(encoder: str = "efficientnet-b0", **changes) -> ModelCard:
    return default_segmenter_card((64, 64), classes=CLASSES, encoder_name=encoder).replace(**changes)


# --- the card -------------------------------------------------------------------------------------------


def test_card_classes_round_trip_and_binary_cards_keep_their_meaning(tmp_path):
    card = multiclass_card()
    assert card.architecture["classes"] == 4 and card.is_multiclass and card.class_names == CLASSES
    card.write(tmp_path / "card.json")
    assert ModelCard.read(tmp_path / "card.json") == card
    binary = default_segmenter_card((64, 64))
    assert not binary.is_multiclass and binary.class_names == ("authentic", "manipulated")
    old_card = binary.to_dict()
    del old_card["classes"]  # a card written before classes existed
    assert ModelCard.from_dict(old_card) == binary


def test_card_with_class_names_that_do_not_match_the_channels_says_how_to_fix():
    with pytest.raises(ValueError, match="set architecture.classes to 4"):
        ModelCard(kind="segmenter", architecture={"arch": "Unet", "classes": 3}, classes=CLASSES, version="x")
    with pytest.raises(ValueError, match="needs its class names"):
        ModelCard(kind="segmenter", architecture={"arch": "Unet", "classes": 3}, version="x")


def test_wrong_encoder_name_lists_the_tested_encoders_and_similar_ones():
    with pytest.raises(ModelBuildError) as error:
        build_model(multiclass_card(encoder="resnet-34"))
    message = str(error.value)
    assert all(name in message for name in SEGMENTER_ENCODERS) and "'resnet34'" in message


# --- masks ------------------------------------------------------------------------------------------------


def test_class_indexed_png_masks_keep_their_ids_and_binary_layouts_become_class_one(tmp_path):
    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 3:9], ids[10:15, 20:28] = 1, 3
    Image.fromarray(ids).save(tmp_path / "ids.png")
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    palette.save(tmp_path / "palette.png")
    Image.fromarray(ids * 85).save(tmp_path / "white.png")  # binary layout: 0 / 255 (and 85, 255 > 127)
    Image.fromarray((ids > 0).astype(np.uint8) * 255).save(tmp_path / "probe.jpg", quality=70)

    assert np.array_equal(load_class_mask(str(tmp_path / "ids.png"), (30, 20), 4), ids)
    assert np.array_equal(load_class_mask(str(tmp_path / "palette.png"), (30, 20), 4), ids)
    assert np.array_equal(load_class_mask(str(tmp_path / "white.png"), (30, 20), 4), (ids == 3).astype(np.uint8))
    assert np.array_equal(load_class_mask(str(tmp_path / "probe.jpg"), (30, 20), 4), (ids > 0).astype(np.uint8))
    assert np.array_equal(load_mask(str(tmp_path / "ids.png"), (30, 20)), ids > 0)  # binary models: any class
    with pytest.raises(DatasetError, match=r"ids.png holds class id 3.*2 classes"):
        load_class_mask(str(tmp_path / "ids.png"), (30, 20), 2)


def test_per_class_masks_partition_the_union_mask_and_name_the_largest_type():
    probabilities = np.zeros((4, 8, 8), np.float32)
    probabilities[0] = 0.9
    probabilities[1] = 0.1
    probabilities[:, :4, :4] = np.array([0.1, 0.2, 0.6, 0.1])[:, None, None]  # copy_moved, a quarter
    probabilities[:, 6:, 6:] = np.array([0.3, 0.1, 0.1, 0.5])[:, None, None]  # removed, a sixteenth
    masks, dominant = summarise_classes(probabilities, 32, 32, 0.5, CLASSES)
    assert [(m.class_id, m.name) for m in masks] == [(2, "copy_moved"), (3, "removed")] and dominant == "copy_moved"
    union = summarise_mask(1 - probabilities[0], 32, 32, 0.5)
    decoded = [decode_mask(m.rle).astype(bool) for m in masks]
    assert np.array_equal(decoded[0] | decoded[1], decode_mask(union.rle).astype(bool)) and not (decoded[0] & decoded[1]).any()
    assert masks[0].area_fraction == pytest.approx(decoded[0].mean())
    assert summarise_classes(np.stack([np.ones((4, 4)), np.zeros((4, 4))]), 9, 9, 0.5, ("authentic", "spliced")) == ([], None)


def test_class_metrics_come_from_smp_with_per_class_and_mean_iou():
    from forensics.metrics import class_metrics, class_stats_from_confusion

    confusion = np.array([[80, 10, 0], [5, 15, 0], [0, 0, 0]])  # class 2 never occurs nor is predicted
    figures = class_metrics(class_stats_from_confusion(confusion), ("authentic", "spliced", "removed"))
    assert figures["per_class"]["authentic"]["iou"] == pytest.approx(80 / 95)
    assert figures["per_class"]["spliced"]["iou"] == pytest.approx(15 / 30)
    assert figures["per_class"]["spliced"]["f1"] == pytest.approx(30 / 45)
    assert figures["per_class"]["removed"]["iou"] is None
    assert figures["mean_iou"] == pytest.approx((80 / 95 + 0.5) / 2)


# --- training, every tested encoder ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_pairs(tmp_path_factory):
    return write_class_dataset(tmp_path_factory.mktemp("classes"), 8)


@pytest.mark.parametrize("encoder", SEGMENTER_ENCODERS)
def test_tiny_multiclass_segmenter_trains_saves_and_loads_with_each_encoder(encoder, class_pairs, tmp_path):
    settings = TrainSettings(epochs=1, batch_size=4, threads=2, augment=AugmentConfig.none())
    result = train_model(multiclass_card(encoder), class_pairs[:6], class_pairs[6:], settings)
    history = result.history[0]
    assert set(history["class_iou"]) == set(CLASSES) and 0.0 <= history["mean_iou"] <= 1.0
    classes = result.card.metrics["validation_calibrated"]["classes"]
    assert np.array(classes["confusion_matrix"]).shape == (4, 4)
    assert np.array(classes["confusion_matrix"]).sum() == 2 * 64 * 64  # every validation pixel, once
    path = save_checkpoint(result.model, result.card, tmp_path / "segmenter.safetensors", half=False)
    model, card = load_checkpoint(path, expected_kind="segmenter")
    assert card.class_names == CLASSES and card.architecture["encoder_name"] == encoder
    batch = __import__("torch").rand(1, 3, 64, 64)
    assert model.eval()(batch).shape == (1, 4, 64, 64)


# --- the scan ---------------------------------------------------------------------------------------------


def test_multiclass_scan_writes_one_rle_per_class_matching_the_models_classes_at_original_size(ray_local, tiny_checkpoints, class_pairs, tmp_path):
    import duckdb

    from forensics.decode import decode_image
    from forensics.inference import SegmenterPredictor
    from pipeline.storage import parse_location
    from tests.conftest import jpeg_bytes
    from tests.test_scan import read_scan, scan

    settings = TrainSettings(epochs=1, batch_size=4, threads=2, augment=AugmentConfig.none())
    card = multiclass_card(resize_mode="native_tiles", tile_overlap=16, max_tiles=12)
    result = train_model(card, class_pairs[:6], class_pairs[6:], settings)
    segmenter = SegmenterPredictor(result.model, result.card)
    archive = tmp_path / "photos"
    archive.mkdir()
    for index, (width, height) in enumerate([(150, 100), (64, 64), (97, 203)]):
        (archive / f"img{index}.jpg").write_bytes(jpeg_bytes(width, height, seed=index))

    def class_maps(path):
        decoded = decode_image(open(path, "rb").read(), [segmenter.card.input_spec])
        view, _ = segmenter.view(decoded.inputs[segmenter.card.input_spec])
        return next(segmenter.probability_maps([view])).astype(np.float16).astype(np.float32)  # shipped as float16

    # A pixel threshold at the first image's median P(manipulated): that image has both authentic and manipulated pixels.
    threshold = float(np.median(1 - class_maps(archive / "img0.jpg")[0]))
    # A `manipulated` threshold of 0: every image is flagged, so every image gets its masks.
    trained_card = result.card.replace(thresholds={**result.card.thresholds, "pixel": threshold, "manipulated": 0.0})
    checkpoints = {"classifier": tiny_checkpoints["classifier"], "segmenter": str(save_checkpoint(result.model, trained_card, tmp_path / "seg.safetensors"))}
    segmenter = SegmenterPredictor(*load_checkpoint(checkpoints["segmenter"]))
    summary = scan(archive, tmp_path / "out", checkpoints)
    rows = read_scan(tmp_path / "out", summary.scan_id)
    assert len(rows) == 3
    seen_classes = set()
    for row in rows:
        assert row["status"] == "ok", row["error"]
        expected = class_index_map(class_maps(parse_location(row["uri"]).path), row["height"], row["width"], threshold)
        union = decode_mask(row["mask_rle"]).astype(bool)
        assert np.array_equal(union, expected > 0)  # mask_rle stays the union of the manipulated classes
        for entry in row["mask_classes"]:
            pixels = decode_mask(entry["mask_rle"]).astype(bool)
            assert pixels.shape == (row["height"], row["width"])
            assert np.array_equal(pixels, expected == entry["class_id"]) and entry["name"] == CLASSES[entry["class_id"]]
            assert entry["area"] == pytest.approx(pixels.mean(), abs=1e-6)
            seen_classes.add(entry["class_id"])
        present = {entry["class_id"] for entry in row["mask_classes"]}
        assert present == set(np.unique(expected)) - {0}
        if present:
            assert row["manipulation_type"] == max(row["mask_classes"], key=lambda e: e["area"])["name"]
        else:
            assert row["manipulation_type"] is None
    assert len(seen_classes) >= 2
    dominant = duckdb.sql(f"SELECT manipulation_type, count(*) FROM read_parquet('{tmp_path / 'out'}/scan_id=*/*.parquet') "
                          "GROUP BY 1").fetchall()
    assert sum(count for _, count in dominant) == 3


def test_binary_cards_leave_the_class_columns_null_and_older_outputs_read_together(ray_local, tiny_checkpoints, tmp_path):
    import duckdb

    from pipeline import schema
    from tests.conftest import jpeg_bytes
    from tests.test_scan import read_scan, scan

    archive = tmp_path / "photos"
    archive.mkdir()
    (archive / "a.jpg").write_bytes(jpeg_bytes(80, 60))
    output = tmp_path / "out"
    summary = scan(archive, output, tiny_checkpoints)
    [row] = read_scan(output, summary.scan_id)
    assert row["status"] == "ok" and row["mask_rle"] is not None
    assert row["mask_classes"] is None and row["manipulation_type"] is None
    # A file written before the class columns existed, beside the new output.
    old_schema = pa.schema([f for f in schema.OUTPUT_SCHEMA if f.name not in (schema.MASK_CLASSES, schema.MANIPULATION_TYPE)])
    old_row = {name: value for name, value in row.items() if name in old_schema.names}
    old_row.update(scan_id="older-scan", uri="file:///older.jpg")
    old_folder = output / "scan_id=older-scan"
    old_folder.mkdir()
    pq.write_table(pa.Table.from_pylist([old_row], schema=old_schema), old_folder / "part.parquet")
    rows = duckdb.sql(f"SELECT scan_id, manipulation_type, mask_classes IS NULL, mask_rle.counts IS NOT NULL "
                      f"FROM read_parquet('{output}/scan_id=*/*.parquet', union_by_name=true, hive_partitioning=1) ORDER BY scan_id").fetchall()
    assert sorted(rows) == sorted([("older-scan", None, True, True), (summary.scan_id, None, True, True)])


def test_train_job_writes_a_multiclass_card_and_the_class_confusion_picture(class_pairs, tmp_path):
    from tests.test_training import _train_args
    from jobs import train

    data = class_pairs[0].image_uri.rsplit("/images/", 1)[0]
    args = _train_args(model="segmenter", data=data, output=tmp_path, valid_fraction=0.25, epochs=1, batch_size=4,
                       input_size=64, threads=1, num_workers=0, classes=",".join(CLASSES), no_augment=True)
    assert train.run(args) == 0  # --num-workers 0: the same loop in this process, no Ray
    model, card = load_checkpoint(tmp_path / "segmenter.safetensors", expected_kind="segmenter")
    assert card.classes == CLASSES and card.architecture["classes"] == 4 and "--classes" in card.reproduce
    assert "mean_iou" in card.metrics["validation_at_best_epoch"]
    assert (tmp_path / "class_confusion_matrix.png").stat().st_size > 0
    bad = _train_args(model="segmenter", data=data, output=tmp_path / "bad", classes="6", num_workers=0)
    assert train.run(bad) == 2
