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
from tests.test_resilience import scan


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


# --- One driver per scan, model versions, scan ids, credentials -------------------------------------------

HOLD_LEASE = """
import sys, time
from pipeline.state import LeaseError, LeaseKeeper, ScanState
from pipeline.storage import parse_location
keeper = LeaseKeeper(ScanState(parse_location(sys.argv[1]), None, None), heartbeat_seconds=0.5)
try:
    keeper.acquire("scan-held", "file:///archive")
except LeaseError as error:
    print("REFUSED", error, flush=True)
    sys.exit(3)
print("ACQUIRED", flush=True)
time.sleep(120)
"""


def start_lease_holder(output):
    import subprocess
    import sys

    from tests.test_resilience import REPO

    return subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(output)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_drivers_started_together_get_one_lease_and_a_sigkilled_drivers_lease_is_taken_over(tmp_path):
    import signal

    from pipeline.state import LeaseKeeper, ScanState
    from pipeline.storage import parse_location

    output = tmp_path / "out"
    output.mkdir()
    first, second = start_lease_holder(output), start_lease_holder(output)  # two real processes at once
    lines = {first.pid: first.stdout.readline(), second.pid: second.stdout.readline()}
    holder, refused = (first, second) if lines[first.pid].startswith("ACQUIRED") else (second, first)
    assert lines[holder.pid].startswith("ACQUIRED")
    assert lines[refused.pid].startswith("REFUSED") and "being written by another driver" in lines[refused.pid]
    assert refused.wait(timeout=30) == 3

    keeper = LeaseKeeper(ScanState(parse_location(str(output)), None, None))
    with pytest.raises(Exception, match="being written by another driver"):
        keeper.acquire("scan-mine", "file:///archive")  # the holder is alive: no take-over
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    keeper.acquire("scan-mine", "file:///archive")  # its driver is dead: taken over, with a record of whose it was
    assert keeper.took_over is not None and keeper.took_over.scan_id == "scan-held"
    keeper.release()
    assert not (output / "_forgescan" / "lease.json").exists()


def test_scan_is_refused_before_ray_starts_while_another_driver_holds_the_output(tiny_checkpoints, tmp_path):
    from pipeline.scan import ScanError

    archive = small_archive(tmp_path / "a", 1)
    output = tmp_path / "out"
    output.mkdir()
    holder = start_lease_holder(output)
    try:
        assert holder.stdout.readline().startswith("ACQUIRED")
        with pytest.raises(ScanError, match="being written by another driver .*scan scan-held"):
            scan(archive, output, tiny_checkpoints)
    finally:
        holder.kill()
        holder.wait()


def running_manifest(state, scan_id, source, classifier="tiny-classifier-untrained", segmenter="tiny-segmenter-untrained"):
    from pipeline.state import RUNNING, ScanManifest, utc_now

    state.write_manifest(ScanManifest(scan_id=scan_id, source=source, output=state.output.uri, state=RUNNING,
                                      started_at=utc_now(), classifier_version=classifier, segmenter_version=segmenter))


def test_resume_with_other_model_versions_is_refused_or_starts_a_new_scan(tmp_path):
    from pipeline.state import PlanError, ScanState, plan_scan
    from pipeline.storage import parse_location

    state = ScanState(parse_location(str(tmp_path / "out")), None, None)
    running_manifest(state, "scan-v1", "file:///archive", classifier="classifier-v1")
    with pytest.raises(PlanError, match="would mix model versions.*new --scan-id"):
        plan_scan(state, "file:///archive", "scan-v1", False, False, "classifier-v2", "tiny-segmenter-untrained")
    plan = plan_scan(state, "file:///archive", None, False, False, "classifier-v2", "tiny-segmenter-untrained")
    assert plan.scan_id != "scan-v1" and plan.mode == "incremental"
    assert any("scan-v1" in note and "mixes model versions" in note for note in plan.notes)
    same = plan_scan(state, "file:///archive", None, False, False, "classifier-v1", "tiny-segmenter-untrained")
    assert (same.scan_id, same.mode) == ("scan-v1", "resume")


def test_scan_id_of_a_running_scan_of_another_source_is_not_resumed(tmp_path):
    from pipeline.state import PlanError, ScanState, plan_scan
    from pipeline.storage import parse_location

    state = ScanState(parse_location(str(tmp_path / "out")), None, None)
    running_manifest(state, "nightly", "file:///archive-a")
    with pytest.raises(PlanError, match="is a scan of file:///archive-a"):
        plan_scan(state, "file:///archive-b", "nightly", False, False, "tiny-classifier-untrained", "tiny-segmenter-untrained")


@pytest.mark.parametrize("scan_id", ["..", "a/../b", "..hidden", "x\\y", "-dash-first", "a" * 200])
def test_unsafe_scan_ids_are_refused_before_anything_is_written(scan_id, tiny_checkpoints, tmp_path):
    from pipeline.scan import ScanError

    archive = small_archive(tmp_path / "a", 1)
    with pytest.raises((ScanError, ValueError), match="scan.id"):
        scan(archive, tmp_path / "out", tiny_checkpoints, scan_id=scan_id)
    assert not (tmp_path / "out" / "_forgescan" / "scans").exists()


def test_credentials_in_the_endpoint_never_reach_manifests_errors_or_logs(tiny_checkpoints, tmp_path, caplog):
    import logging

    from pipeline.storage import StorageError
    from pipeline.state import COMPLETE, ScanManifest, ScanState
    from pipeline.storage import parse_location

    secret = "pw-s3cr3t-never-written"
    endpoint = f"http://minio-user:{secret}@127.0.0.1:9"  # port 9 (discard): nothing answers
    with pytest.raises(StorageError) as refused:
        scan("s3://bucket/prefix", tmp_path / "out", tiny_checkpoints, endpoint_url=endpoint)
    assert secret not in str(refused.value) and "127.0.0.1:9" in str(refused.value)

    state = ScanState(parse_location(str(tmp_path / "out")), None, None)
    state.write_manifest(ScanManifest(scan_id="s", source="s3://bucket/prefix", output=state.output.uri, state=COMPLETE,
                                      started_at="now", classifier_version="c", segmenter_version="s",
                                      endpoint_url=endpoint))
    text = (tmp_path / "out" / "_forgescan" / "scans" / "s.json").read_text()
    assert secret not in text and "http://***@127.0.0.1:9" in text

    with caplog.at_level(logging.INFO, logger="forgescan"):
        logging.getLogger("forgescan").info("scan of %s via %s", "s3://bucket/prefix", endpoint)
        logging.getLogger("forgescan").warning(f"presigned https://h/k?X-Amz-Signature={secret}&x=1")
    assert secret not in caplog.text and "127.0.0.1:9" in caplog.text


def test_folding_a_scan_keeps_the_latest_row_per_object_and_drops_changed_files():
    """The streamed fold gives what one DuckDB pass over every row gives: the latest row per URI by scan time,
    also when an older table row is newer than the new scan's (a resumed scan finishing late), and without the
    rows of changed files; batches stream through in bounded row groups."""
    import datetime as dt

    from pipeline import schema as out
    from pipeline.latest_state import (
        COMMITTED_FILE, LATEST_STATE_SCHEMA, ROW_GROUP_ROWS, fold, identity_hashes, latest_per_object,
    )

    def rows(uris, day, scan_id, file):
        count = len(uris)
        return pa.table({
            out.URI: uris, out.SIZE_BYTES: [1] * count, out.ETAG: [f"e{day}"] * count, out.MTIME: [None] * count,
            "identity_hash": identity_hashes(uris, [1] * count, [f"e{day}"] * count, [None] * count),
            out.STATUS: ["ok"] * count, "error_kind": [None] * count, "permanent_error": [False] * count,
            out.CLASSIFIER_VERSION: ["c"] * count, out.SEGMENTER_VERSION: ["s"] * count,
            out.SCAN_ID: [scan_id] * count,
            out.SCANNED_AT: [dt.datetime(2026, 1, day, tzinfo=dt.timezone.utc)] * count,
            COMMITTED_FILE: [file] * count,
        }).cast(LATEST_STATE_SCHEMA)

    older = pa.concat_tables([rows([f"u{i}" for i in range(0, 150_000)], 1, "a", "a/part-1.parquet"),
                              rows([f"u{i}" for i in range(150_000, 160_000)], 5, "b", "b/part-1.parquet"),
                              rows([f"u{i}" for i in range(160_000, 170_000)], 2, "c", "c/part-1.parquet")])
    newer = rows([f"u{i}" for i in range(140_000, 155_000)] + ["fresh"], 3, "d", "d/part-1.parquet")
    batches = list(fold(older.to_batches(max_chunksize=ROW_GROUP_ROWS), newer, ["c/part-1.parquet"]))
    folded = pa.Table.from_batches(batches).cast(LATEST_STATE_SCHEMA)

    expected = latest_per_object(older.filter(pa.compute.not_equal(older.column(COMMITTED_FILE), "c/part-1.parquet")),
                                 newer)
    key = [(out.URI, "ascending")]
    assert folded.sort_by(key).equals(expected.sort_by(key))
    scans = dict(zip(folded.column(out.URI).to_pylist(), folded.column(out.SCAN_ID).to_pylist()))
    assert (scans["u0"], scans["u145000"], scans["u152000"], scans["fresh"]) == ("a", "d", "b", "d")
    assert "u165000" not in scans and len(scans) == 160_001
    assert max(batch.num_rows for batch in batches[:-1]) <= ROW_GROUP_ROWS
