"""Commits that cannot corrupt: failed uploads publish nothing, damaged files and manifests are named and left out."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import sink
from pipeline.results import ScanResults
from pipeline.sink import write_table_atomically
from pipeline.storage import parse_location, storage_options_key
from tests.conftest import jpeg_bytes
from tests.faulty_s3_proxy import FaultyS3Proxy
from tests.test_resilience import rows_of, scan


def incompressible_table(megabytes: int) -> pa.Table:
    """Random bytes in 64 KiB cells: a Parquet file of about `megabytes`, so the upload needs several parts."""
    rng = np.random.default_rng(0)
    cells = [rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes() for _ in range(megabytes * 16)]
    return pa.table({"uri": [f"s3://x/{i}" for i in range(len(cells))], "payload": cells})


def fail_halfway_through_the_encoder(monkeypatch):
    """The Parquet encoder dies after writing part of the file (a worker error, MemoryError, a bad value)."""
    real_write_table = pq.write_table

    def write_half_then_fail(table, where, **options):
        real_write_table(table.slice(0, table.num_rows // 2), where, **options)
        raise MemoryError("injected: the encoder failed part-way")

    monkeypatch.setattr(sink.pq, "write_table", write_half_then_fail)


@pytest.mark.parametrize("failure", ["store rejects the second part", "encoder fails part-way"])
def test_failed_s3_parquet_write_publishes_nothing_and_aborts_its_upload(failure, s3, s3_endpoint, monkeypatch):
    bucket = "failed-writes-" + ("store" if failure.startswith("store") else "encoder")
    s3.create_bucket(Bucket=bucket)
    location = parse_location(f"s3://{bucket}/out/scan_id=s1/part-0.parquet")
    table = incompressible_table(12)  # ~12 MiB: parts of 5 MiB go out while the file is written
    with FaultyS3Proxy(s3_endpoint, rejected_upload_parts={2} if failure.startswith("store") else ()) as proxy:
        if failure.startswith("encoder"):
            fail_halfway_through_the_encoder(monkeypatch)
        with pytest.raises((MemoryError, OSError, PermissionError)):
            write_table_atomically(table, location, proxy.endpoint, storage_options_key({}))
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # no truncated part-0.parquet
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the upload was aborted
    if failure.startswith("store"):
        assert proxy.injected["rejected_parts"] >= 1


def test_successful_s3_multipart_write_is_one_complete_file(s3, s3_endpoint):
    s3.create_bucket(Bucket="good-writes")
    table = incompressible_table(12)
    write_table_atomically(table, parse_location("s3://good-writes/out/part-0.parquet"), s3_endpoint,
                           storage_options_key({}))
    body = s3.get_object(Bucket="good-writes", Key="out/part-0.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(body)).equals(table)


def small_archive(root, count: int):
    root.mkdir()
    for index in range(count):
        (root / f"{index}.jpg").write_bytes(jpeg_bytes(seed=index))
    return root


def test_truncated_committed_file_is_named_left_out_and_only_its_objects_rescanned(ray_local, tiny_checkpoints, tmp_path, caplog):
    archive = small_archive(tmp_path / "a", 3)
    output = tmp_path / "out"
    first = scan(archive, output, tiny_checkpoints)
    for index in range(3, 5):
        (archive / f"{index}.jpg").write_bytes(jpeg_bytes(seed=index))
    assert scan(archive, output, tiny_checkpoints).rows_in_scan == 2  # a second scan, in its own file
    damaged = sorted((output / f"scan_id={first.scan_id}").glob("*.parquet"))[0]  # once it hid the whole scan
    held = sorted(pq.read_table(damaged).column("uri").to_pylist())
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    results = ScanResults(str(output))
    assert results.counts(results.select()).rows == 5 - len(held)
    assert any(str(damaged) in warning for warning in results.warnings)

    third = scan(archive, output, tiny_checkpoints)
    assert sorted(r["uri"] for r in rows_of_readable(output, third.scan_id)) == held
    assert (third.listed, third.skipped_unchanged) == (5, 5 - len(held))
    assert any(str(damaged) in note for note in third.notes)
    assert str(damaged) in caplog.text

    results = ScanResults(str(output))
    assert results.counts(results.select()).rows == 5


def rows_of_readable(output, scan_id):
    return [r for path in (output / f"scan_id={scan_id}").glob("*.parquet") for r in pq.read_table(path).to_pylist()]


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_manifest_is_named_and_its_scan_redone(damage, ray_local, tiny_checkpoints, tmp_path):
    archive = small_archive(tmp_path / "a", 3)
    output = tmp_path / "out"
    first = scan(archive, output, tiny_checkpoints)
    manifest = output / "_forgescan" / "scans" / f"{first.scan_id}.json"
    text = manifest.read_text()
    manifest.write_text("" if damage == "empty" else text[: len(text) // 2])

    second = scan(archive, output, tiny_checkpoints)
    assert second.rows_in_scan == 3  # the damaged scan no longer counts as complete: its objects are redone
    assert any(str(manifest) in note and "Delete the file" in note for note in second.notes)
    results = ScanResults(str(output))
    assert [m.scan_id for m in results.complete_scans] == [second.scan_id]
    assert results.counts(results.select()).rows == 3
    assert any(str(manifest) in warning for warning in results.warnings)


def test_manifests_are_replaced_whole_and_leave_no_staging_files(ray_local, tiny_checkpoints, tmp_path):
    archive = small_archive(tmp_path / "a", 2)
    output = tmp_path / "out"
    summary = scan(archive, output, tiny_checkpoints)
    folder = output / "_forgescan" / "scans"
    assert sorted(os.listdir(folder)) == [f"{summary.scan_id}.json"]
    assert json.loads((folder / f"{summary.scan_id}.json").read_text())["state"] == "complete"
