"""The HTTP endpoint over real HTTP on 127.0.0.1: routes, a scan-identical row, every bad upload, a burst."""

from __future__ import annotations

import socket
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest
from PIL import Image

from pipeline.config import ScanConfig
from pipeline.scan import run_scan
from pipeline.serving import ServeConfig, build_app
from tests.conftest import decompression_bomb_png, jpeg_bytes, png_bytes

UPLOAD_LIMIT = 200_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(ray_local, tiny_native_checkpoints):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServeConfig(classifier_checkpoint=tiny_native_checkpoints["classifier"],
                         segmenter_checkpoint=tiny_native_checkpoints["segmenter"],
                         cpus_per_replica=0.5, max_upload_bytes=UPLOAD_LIMIT, max_batch_size=4)
    serve.run(build_app(config), name="forgescan-test", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    states = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/health", timeout=10)
        states.append((response.status_code, response.json()["status"]))
        if response.status_code == 200:
            break
        time.sleep(0.2)
    try:
        yield {"url": url, "health_states": states}
    finally:
        serve.shutdown()


def post(url: str, data: bytes | None, name: str = "photo.jpg", **params) -> httpx.Response:
    files = {"file": (name, data, "application/octet-stream")} if data is not None else None
    return httpx.post(f"{url}/predict", files=files, params=params, timeout=120)


def test_health_is_200_once_loaded_and_only_503_loading_before(endpoint):
    states = endpoint["health_states"]
    assert states[-1] == (200, "ok")
    assert all(state == (503, "loading") for state in states[:-1])


def test_root_names_service_versions_and_device(endpoint):
    body = httpx.get(endpoint["url"] + "/", timeout=10).json()
    assert body["service"] == "forgescan"
    assert body["version"] == tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert body["ready"] is True
    assert body["models"]["classifier"]["version"] == "tiny-classifier-native-untrained"
    assert body["models"]["segmenter"]["version"] == "tiny-segmenter-native-untrained"
    assert body["models"]["device"] == "cpu"
    assert body["limits"]["max_upload_bytes"] == UPLOAD_LIMIT


def test_predict_matches_the_row_a_scan_writes(endpoint, tiny_native_checkpoints, tmp_path):
    image = jpeg_bytes(150, 97, seed=5)
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "odd-size.jpg").write_bytes(image)
    run_scan(ScanConfig(source=str(folder), output=str(tmp_path / "out"), show_progress=False,
                        classifier_checkpoint=tiny_native_checkpoints["classifier"],
                        segmenter_checkpoint=tiny_native_checkpoints["segmenter"], cpus_per_actor=0.5, decode_cpus=0.5))
    scanned = ds.dataset(str(tmp_path / "out"), format="parquet", exclude_invalid_files=True).to_table().to_pylist()
    assert len(scanned) == 1
    row = scanned[0]

    response = post(endpoint["url"], image, name="odd-size.jpg")
    assert response.status_code == 200, response.text
    served = response.json()
    assert served["filename"] == "odd-size.jpg"
    assert served["status"] == "ok"
    assert (served["width"], served["height"]) == (150, 97)
    assert served["mask_rle"]["size"] == [97, 150]
    assert served["mask_rle"] == row["mask_rle"]
    for column in ("sha256", "format", "size_bytes", "verdict", "mask_area", "mask_bbox", "classifier_version", "pdq_hash", "reasons",
                   "segmenter_version", "analysis", "analysis_scale"):
        assert served[column] == row[column], column
    for column in ("ai_score", "manipulation_score", "confidence"):
        assert served[column] == pytest.approx(row[column], abs=1e-5), column


def test_mask_false_leaves_the_mask_out(endpoint):
    body = post(endpoint["url"], jpeg_bytes(80, 60, seed=1), mask="false").json()
    assert body["status"] == "ok"
    assert "mask_rle" not in body
    assert body["verdict"] in ("authentic", "ai_generated", "manipulated")


GOOD = jpeg_bytes(120, 80, seed=1)
BAD_UPLOADS = {
    "empty": (b"", 400, "empty"),
    "not_an_image": (b"<!DOCTYPE html><html>not an image</html>", 415, "not_an_image"),
    "truncated": (GOOD[: len(GOOD) // 2], 422, "truncated"),
    "too_many_pixels": (decompression_bomb_png(), 413, "too_large"),
    "over_upload_limit": (b"\xff" * (UPLOAD_LIMIT + 1), 413, "upload_too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_upload_gets_4xx_json_naming_the_problem(endpoint, case):
    data, status, kind = BAD_UPLOADS[case]
    response = post(endpoint["url"], data, name=f"{case}.jpg")
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind
    assert body["message"]


def test_missing_file_field_gets_400(endpoint):
    response = httpx.post(endpoint["url"] + "/predict", data={"picture": "x"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"] == "missing_file"
    assert "`file`" in response.json()["message"]


def test_burst_of_concurrent_requests_all_succeed_beside_bad_ones(endpoint):
    images = [jpeg_bytes(64 + 8 * i, 64, seed=i) for i in range(12)]
    uploads = [(f"good-{i}.jpg", data) for i, data in enumerate(images)] + [("bad.jpg", b"not an image at all")] * 4
    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        responses = list(pool.map(lambda item: post(endpoint["url"], item[1], name=item[0]), uploads))
    good, bad = responses[:len(images)], responses[len(images):]
    assert [r.status_code for r in good] == [200] * len(images)
    assert [r.json()["width"] for r in good] == [64 + 8 * i for i in range(12)]
    assert [r.status_code for r in bad] == [415] * 4


def test_png_with_alpha_is_scored(endpoint):
    image = png_bytes(Image.new("RGBA", (40, 30), (255, 0, 0, 128)))
    body = post(endpoint["url"], image, name="rgba.png").json()
    assert (body["format"], body["width"], body["height"], body["status"]) == ("PNG", 40, 30, "ok")
