"""End-to-end scans on a real local Ray instance: one row per object, masks that round-trip, readable output."""

from __future__ import annotations

import glob

import duckdb
import numpy as np
import pyarrow.dataset as pads
import pytest

from forensics.decode import decode_image
from forensics.inference import SegmenterPredictor
from forensics.masks import decode_mask, mask_at_original_size
from forensics.checkpoint import load_checkpoint, save_checkpoint
from pipeline import ScanConfig, run_scan
from pipeline import schema
from pipeline.storage import StorageError, parse_location
from tests.conftest import jpeg_bytes, mixed_archive_objects


def read_scan(output, scan_id=None):
    table = pads.dataset(str(output), format="parquet", partitioning="hive").to_table()
    rows = table.to_pylist()
    return [r for r in rows if scan_id is None or r["scan_id"] == scan_id]


def scan(source, output, checkpoints, **options):
    return run_scan(ScanConfig(source=str(source), output=str(output), classifier_checkpoint=checkpoints["classifier"],
                               segmenter_checkpoint=checkpoints["segmenter"], batch_size=8, show_progress=False,
                               **options))


def test_mixed_archive_gives_one_row_per_object_with_useful_errors(ray_local, tiny_checkpoints, mixed_archive, tmp_path):
    summary = scan(mixed_archive, tmp_path / "out", tiny_checkpoints)
    rows = read_scan(tmp_path / "out", summary.scan_id)
    expected = {parse_location(str(mixed_archive / name)).uri for name in mixed_archive_objects()}
    assert sorted(r["uri"] for r in rows) == sorted(expected)
    by_name = {r["uri"].split("/archive/", 1)[1]: r for r in rows}
    assert by_name["bad/empty.jpg"]["error"].startswith("empty")
    assert by_name["bad/page.jpg"]["error"].startswith("not_an_image")
    assert by_name["bad/bomb.png"]["error"].startswith("too_large")
    assert by_name["bad/truncated.jpg"]["error"].split(":")[0] in ("truncated", "corrupt")
    tiny = by_name["good/tiny-1x1.png"]  # decodes, but below --min-side: a clear status instead of a verdict
    assert (tiny["status"], tiny["verdict"]) == ("error", "error") and tiny["error"].startswith("too_small: 1x1 pixels")
    for name, row in by_name.items():
        if name == "good/tiny-1x1.png":
            continue
        if name.startswith("bad/"):
            assert (row["status"], row["verdict"], row["mask_rle"]) == ("error", "error", None)
        else:
            assert row["status"] == "ok", row["error"]
            assert row["verdict"] in ("authentic", "ai_generated", "manipulated")
            assert row["mask_rle"] is not None and 0.0 <= row["confidence"] <= 1.0
            assert row["sha256"] and len(row["sha256"]) == 64
    assert summary.ok == 10 and summary.errors == 6 and summary.rows_in_scan == 16
    assert by_name["good/tiny-1x1.png"]["width"] == 1
    rotated = by_name["good/exif-rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (40, 100)
    assert decode_mask(rotated["mask_rle"]).shape == (100, 40)
    assert by_name["good/animated.webp"]["format"] == "WEBP"


def test_summary_and_manifest_record_where_the_time_went(ray_local, tiny_checkpoints, tmp_path):
    from pipeline.scan import SCAN_PHASES
    from pipeline.state import ScanState

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(jpeg_bytes())
    summary = scan(tmp_path / "a", tmp_path / "out", tiny_checkpoints)
    assert list(summary.timings) == list(SCAN_PHASES) and all(seconds >= 0 for seconds in summary.timings.values())
    assert summary.timings["pipeline"] > 0 and sum(summary.timings.values()) <= summary.seconds + 1.0
    assert any(line.startswith("  time ") and "pipeline" in line for line in summary.render().splitlines())
    manifest = next(m for m in ScanState(parse_location(str(tmp_path / "out")), None, {}).manifests()
                    if m.scan_id == summary.scan_id)
    assert manifest.timings == summary.timings


def written_mask(segmenter, probabilities, height: int, width: int) -> np.ndarray:
    """The mask a scan should write: the map at the pixel threshold for a flagged image, nothing otherwise."""
    if segmenter.image_score(probabilities) < segmenter.card.threshold("manipulated"):
        return np.zeros((height, width), bool)
    return mask_at_original_size(probabilities, height, width, segmenter.card.threshold("pixel"))


def test_masks_decode_to_the_models_thresholded_output_at_original_size(ray_local, tiny_checkpoints, tmp_path):
    archive = tmp_path / "photos"
    archive.mkdir()
    sizes = [(173, 91), (64, 64), (300, 200)]
    for index, (width, height) in enumerate(sizes):
        (archive / f"img{index}.jpg").write_bytes(jpeg_bytes(width, height, seed=index))
    model, card = load_checkpoint(tiny_checkpoints["segmenter"])
    # Every image flagged (`manipulated` threshold 0), so every mask is the map at the pixel threshold.
    flagging = save_checkpoint(model, card.replace(thresholds={**card.thresholds, "manipulated": 0.0}), tmp_path / "seg.safetensors")
    summary = scan(archive, tmp_path / "out", {**tiny_checkpoints, "segmenter": str(flagging)})
    segmenter = SegmenterPredictor(*load_checkpoint(flagging))
    threshold = segmenter.card.threshold("pixel")
    for row in read_scan(tmp_path / "out", summary.scan_id):
        data = parse_location(row["uri"]).path
        decoded = decode_image(open(data, "rb").read(), [segmenter.card.input_size])
        probabilities = segmenter.predict(decoded.inputs[segmenter.card.input_size][None])[0]
        probabilities = probabilities.astype(np.float16).astype(np.float32)  # the pipeline ships float16 maps
        expected = mask_at_original_size(probabilities, row["height"], row["width"], threshold)
        decoded_mask = decode_mask(row["mask_rle"])
        assert decoded_mask.shape == (row["height"], row["width"])
        assert np.array_equal(decoded_mask.astype(bool), expected)


def test_only_images_whose_manipulation_score_reaches_the_threshold_get_a_mask(ray_local, tiny_checkpoints, tmp_path):
    archive = tmp_path / "photos"
    archive.mkdir()
    for index in range(4):
        (archive / f"img{index}.jpg").write_bytes(jpeg_bytes(120, 90, seed=index))
    model, card = load_checkpoint(tiny_checkpoints["segmenter"])
    segmenter = SegmenterPredictor(model, card)
    scores = {}
    for path in sorted(archive.iterdir()):
        decoded = decode_image(path.read_bytes(), [card.input_size])
        probabilities = segmenter.predict(decoded.inputs[card.input_size][None])[0].astype(np.float16).astype(np.float32)
        scores[path.name] = segmenter.image_score(probabilities)
    # `manipulated` between the second and third scores: two images flagged, two not; every pixel above `pixel`.
    low, high = sorted(scores.values())[1:3]
    judging = card.replace(thresholds={"pixel": 0.0, "manipulated": (low + high) / 2})
    checkpoint = save_checkpoint(model, judging, tmp_path / "seg.safetensors")
    summary = scan(archive, tmp_path / "out", {**tiny_checkpoints, "segmenter": str(checkpoint)})
    rows = read_scan(tmp_path / "out", summary.scan_id)
    flagged = [r for r in rows if r["manipulation_score"] >= (low + high) / 2]
    unflagged = [r for r in rows if r["manipulation_score"] < (low + high) / 2]
    assert len(flagged) == 2 and len(unflagged) == 2
    for row in flagged:
        assert decode_mask(row["mask_rle"]).all() and row["mask_area"] == 1.0 and row["mask_bbox"] == [0, 0, 120, 90]
    for row in unflagged:
        mask = decode_mask(row["mask_rle"])
        assert mask.shape == (90, 120) and not mask.any()
        assert row["mask_area"] == 0.0 and row["mask_bbox"] == [0, 0, 0, 0] and row["verdict"] != "manipulated"


def test_native_scan_masks_come_from_tiles_stitched_at_original_size(ray_local, tiny_native_checkpoints, tmp_path):
    from forensics.inference import ClassifierPredictor
    from forensics.tiling import count_tiles

    archive = tmp_path / "photos"
    archive.mkdir()
    sizes = [(173, 91), (40, 30), (300, 200), (500, 400)]  # the last needs more than the card's 12 tiles
    for index, (width, height) in enumerate(sizes):
        (archive / f"img{index}.jpg").write_bytes(jpeg_bytes(width, height, seed=index))
    summary = scan(archive, tmp_path / "out", tiny_native_checkpoints)
    segmenter = SegmenterPredictor(*load_checkpoint(tiny_native_checkpoints["segmenter"]))
    classifier = ClassifierPredictor(*load_checkpoint(tiny_native_checkpoints["classifier"]))
    rows = read_scan(tmp_path / "out", summary.scan_id)
    assert len(rows) == 4 and {r["analysis"] for r in rows} == {"native"}
    for row in rows:
        data = open(parse_location(row["uri"]).path, "rb").read()
        decoded = decode_image(data, [segmenter.card.input_spec, classifier.card.input_spec])
        view, scale = segmenter.view(decoded.inputs[segmenter.card.input_spec])
        assert row["analysis_scale"] == pytest.approx(scale)
        assert count_tiles(view.shape[0], view.shape[1], 64, 16) <= 12
        probabilities = next(segmenter.probability_maps([view])).astype(np.float16).astype(np.float32)
        expected = written_mask(segmenter, probabilities, row["height"], row["width"])
        assert np.array_equal(decode_mask(row["mask_rle"]).astype(bool), expected)
        assert row["manipulation_score"] == pytest.approx(segmenter.image_score(probabilities), abs=1e-3)
        ai = classifier.predict(classifier.view(decoded.inputs[classifier.card.input_spec])[None])[0]
        assert row["ai_score"] == pytest.approx(float(ai), abs=1e-4)
    by_width = {r["width"]: r for r in rows}
    assert by_width[500]["analysis_scale"] < 1.0 and by_width[173]["analysis_scale"] == 1.0


def test_a_scan_with_a_mirror_view_card_writes_the_mirrored_maps_and_records_the_setting(ray_local, tiny_native_checkpoints, tmp_path):
    from forensics.checkpoint import save_checkpoint
    from pipeline.state import ScanState

    model, card = load_checkpoint(tiny_native_checkpoints["segmenter"])
    mirrored = save_checkpoint(model, card.replace(mirror_views=4), tmp_path / "mirrored.safetensors")
    archive = tmp_path / "photos"
    archive.mkdir()
    (archive / "a.jpg").write_bytes(jpeg_bytes(150, 110, seed=3))
    summary = scan(archive, tmp_path / "out", {**tiny_native_checkpoints, "segmenter": mirrored})
    [row] = read_scan(tmp_path / "out", summary.scan_id)
    decoded = decode_image((archive / "a.jpg").read_bytes(), [card.input_spec])
    scores = {}
    for views in (4, 1):
        segmenter = SegmenterPredictor(model, card.replace(mirror_views=views))
        view, _ = segmenter.view(decoded.inputs[card.input_spec])
        scores[views] = segmenter.image_score(next(segmenter.probability_maps([view])).astype(np.float16).astype(np.float32))
    assert row["manipulation_score"] == pytest.approx(scores[4], abs=1e-3)
    assert abs(scores[4] - scores[1]) > 1e-3  # the mirrors changed the map, and the scan used them
    manifest = next(m for m in ScanState(parse_location(str(tmp_path / "out")), None, {}).manifests()
                    if m.scan_id == summary.scan_id)
    assert manifest.segmenter_settings["mirror_views"] == 4 and manifest.segmenter_settings["resize_mode"] == "native_tiles"


def test_triage_scan_analyses_a_thumbnail_and_says_so(ray_local, tiny_native_checkpoints, tmp_path):
    archive = tmp_path / "photos"
    archive.mkdir()
    (archive / "a.jpg").write_bytes(jpeg_bytes(300, 200))
    summary = scan(archive, tmp_path / "out", tiny_native_checkpoints, analysis="triage")
    [row] = read_scan(tmp_path / "out", summary.scan_id)
    assert (row["analysis"], row["analysis_scale"], row["status"]) == ("triage", None, "ok")
    assert decode_mask(row["mask_rle"]).shape == (200, 300)


def test_output_is_readable_by_duckdb_and_pyarrow_and_has_no_partial_files(ray_local, tiny_checkpoints, mixed_archive, tmp_path):
    output = tmp_path / "out"
    summary = scan(mixed_archive, output, tiny_checkpoints)
    table = pads.dataset(str(output), partitioning="hive").to_table()
    assert table.schema.field("mask_rle").type == schema.MASK_RLE_TYPE
    counts = duckdb.sql(
        f"SELECT status, count(*) FROM read_parquet('{output}/scan_id=*/*.parquet', hive_partitioning=1) "
        f"WHERE scan_id = '{summary.scan_id}' GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [("error", 6), ("ok", 10)]  # the 1x1 PNG is a `too_small` row (--min-side)
    assert not glob.glob(str(output / "**" / "*.partial"), recursive=True)
    manifest = (output / "_forgescan" / "scans" / f"{summary.scan_id}.json").read_text()
    assert '"state": "complete"' in manifest


def test_scan_reads_from_s3_endpoint_including_unicode_keys(ray_local, tiny_checkpoints, s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="archive-unicode")
    names = ["photos/a b.jpg", "photos/ünï/çødé.jpg", "photos/c.jpg", "photos/not-image.jpg"]
    for index, name in enumerate(names):
        body = b"hello" if "not-image" in name else jpeg_bytes(80 + index, 60, seed=index)
        s3.put_object(Bucket="archive-unicode", Key=name, Body=body)
    summary = scan("s3://archive-unicode/photos", tmp_path / "out", tiny_checkpoints, endpoint_url=s3_endpoint)
    rows = read_scan(tmp_path / "out", summary.scan_id)
    assert sorted(r["uri"] for r in rows) == sorted(f"s3://archive-unicode/{n}" for n in names)
    assert all(r["etag"] for r in rows)
    assert {r["uri"]: r["status"] for r in rows}["s3://archive-unicode/photos/not-image.jpg"] == "error"


def test_scan_writes_output_to_s3(ray_local, tiny_checkpoints, s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="results-bucket")
    archive = tmp_path / "a"
    archive.mkdir()
    (archive / "x.jpg").write_bytes(jpeg_bytes())
    summary = scan(archive, "s3://results-bucket/scans", tiny_checkpoints, endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results-bucket")["Contents"]]
    assert any(k.startswith(f"scans/scan_id={summary.scan_id}/") and k.endswith(".parquet") for k in keys)
    assert f"scans/_forgescan/scans/{summary.scan_id}.json" in keys


def test_missing_bucket_is_one_clear_message(tiny_checkpoints, s3_endpoint, tmp_path):
    with pytest.raises(StorageError, match="Bucket 'no-such-bucket' does not exist"):
        scan("s3://no-such-bucket/x", tmp_path / "out", tiny_checkpoints, endpoint_url=s3_endpoint)


def test_unreachable_endpoint_is_one_clear_message(tiny_checkpoints, tmp_path):
    with pytest.raises(StorageError, match="endpoint"):
        scan("s3://bucket/x", tmp_path / "out", tiny_checkpoints, endpoint_url="http://127.0.0.1:9",
             storage_options={"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}})


def test_missing_local_source_is_one_clear_message(tiny_checkpoints, tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        scan(tmp_path / "nope", tmp_path / "out", tiny_checkpoints)


def test_manifest_source_lists_exactly_its_uris(ray_local, tiny_checkpoints, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.jpg").write_bytes(jpeg_bytes(seed=index))
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{folder / '0.jpg'}\nfile://{folder / '2.jpg'}\n# comment\n")
    summary = scan(manifest, tmp_path / "out", tiny_checkpoints)
    rows = read_scan(tmp_path / "out", summary.scan_id)
    assert sorted(r["uri"] for r in rows) == [f"file://{folder / '0.jpg'}", f"file://{folder / '2.jpg'}"]
