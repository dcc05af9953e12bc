"""Nothing lost, nothing twice: kill-and-resume, incremental re-runs, store faults, hostile archives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads

from pipeline import ScanConfig, run_scan
from tests.conftest import jpeg_bytes
from tests.faulty_s3_proxy import FaultyS3Proxy

REPO = Path(__file__).parents[1]


def rows_of(output, scan_id):
    table = pads.dataset(str(output), format="parquet", partitioning="hive").to_table()
    return [r for r in table.to_pylist() if r["scan_id"] == scan_id]


def scan(source, output, checkpoints, **options):
    options.setdefault("batch_size", 8)
    return run_scan(ScanConfig(source=str(source), output=str(output), classifier_checkpoint=checkpoints["classifier"],
                               segmenter_checkpoint=checkpoints["segmenter"], show_progress=False, **options))


def committed_files(output: Path) -> list[Path]:
    return sorted(output.glob("scan_id=*/*.parquet"))


def test_sigkilled_scan_resumes_with_exactly_one_row_per_object(tiny_checkpoints, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    count = 320  # several 32-object listing blocks, so files commit while later blocks are in flight
    for index in range(count):
        (archive / f"{index:03d}.jpg").write_bytes(jpeg_bytes(160, 120, seed=index % 16))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "jobs.scan", str(archive), "--output", str(output), "--batch-size", "4",
               "--rows-per-file", "4", "--no-progress", "--classifier", tiny_checkpoints["classifier"],
               "--segmenter", tiny_checkpoints["segmenter"]]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while len(committed_files(output)) < 1 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, "the scan finished before it could be interrupted; make the archive larger"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray instance it started
    first.wait()
    partial = committed_files(output)
    scan_id = partial[0].parent.name.split("=", 1)[1]
    done_before = len(rows_of(output, scan_id))
    assert 0 < done_before < count
    manifest = json.loads((output / "_forgescan" / "scans" / f"{scan_id}.json").read_text())
    assert manifest["state"] == "running"

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"forgescan scan {scan_id} (resume) finished" in second.stdout
    rows = rows_of(output, scan_id)
    uris = [r["uri"] for r in rows]
    assert len(uris) == count and len(set(uris)) == count
    manifest = json.loads((output / "_forgescan" / "scans" / f"{scan_id}.json").read_text())
    assert manifest["state"] == "complete" and manifest["counts"]["rows"] == count
    assert manifest["counts"]["already_committed"] == done_before


def test_incremental_rescan_processes_only_new_and_changed_objects(ray_local, tiny_checkpoints, s3, s3_endpoint, tmp_path):
    bucket = "incremental-archive"
    s3.create_bucket(Bucket=bucket)
    for index in range(3):
        s3.put_object(Bucket=bucket, Key=f"p/{index}.jpg", Body=jpeg_bytes(seed=index))
    output = tmp_path / "out"
    first = scan(f"s3://{bucket}/p", output, tiny_checkpoints, endpoint_url=s3_endpoint)
    assert (first.mode, first.rows_in_scan) == ("incremental", 3)

    s3.put_object(Bucket=bucket, Key="p/new.jpg", Body=jpeg_bytes(seed=10))
    s3.put_object(Bucket=bucket, Key="p/1.jpg", Body=jpeg_bytes(seed=11))  # changed content -> new ETag
    second = scan(f"s3://{bucket}/p", output, tiny_checkpoints, endpoint_url=s3_endpoint)
    assert second.scan_id != first.scan_id
    assert sorted(r["uri"] for r in rows_of(output, second.scan_id)) == [f"s3://{bucket}/p/1.jpg", f"s3://{bucket}/p/new.jpg"]
    assert (second.listed, second.skipped_unchanged) == (4, 2)

    third = scan(f"s3://{bucket}/p", output, tiny_checkpoints, endpoint_url=s3_endpoint)
    assert third.rows_in_scan == 0 and third.skipped_unchanged == 4
    full = scan(f"s3://{bucket}/p", output, tiny_checkpoints, endpoint_url=s3_endpoint, full=True)
    assert full.rows_in_scan == 4


def _model_actors_started() -> int:
    import ray._private.state

    return sum("DetectForgeries" in actor["ActorClassName"] for actor in ray._private.state.actors().values())


def test_an_increment_lists_first_and_starts_model_actors_only_for_new_objects(ray_local, tiny_checkpoints, tmp_path):
    archive = tmp_path / "a"
    archive.mkdir()
    for index in range(6):
        (archive / f"{index}.jpg").write_bytes(jpeg_bytes(seed=index))
    output = tmp_path / "out"
    assert scan(archive, output, tiny_checkpoints).rows_in_scan == 6

    before = _model_actors_started()
    nothing_new = scan(archive, output, tiny_checkpoints)
    assert (nothing_new.listed, nothing_new.skipped_unchanged, nothing_new.rows_in_scan) == (6, 6, 0)
    assert _model_actors_started() == before, "an increment with nothing new must not start the models"

    (archive / "new.jpg").write_bytes(jpeg_bytes(seed=20))
    one_new = scan(archive, output, tiny_checkpoints, num_model_actors=(1, 4))
    assert [r["uri"].rsplit("/", 1)[1] for r in rows_of(output, one_new.scan_id)] == ["new.jpg"]
    assert rows_of(output, one_new.scan_id)[0]["status"] == "ok"
    assert _model_actors_started() == before + 1, "one new object is one batch: one model actor, however large the pool"


def test_model_change_forces_rescan_when_asked(ray_local, tiny_checkpoints, tmp_path):
    from forensics.checkpoint import load_checkpoint, save_checkpoint

    archive = tmp_path / "a"
    archive.mkdir()
    (archive / "x.jpg").write_bytes(jpeg_bytes())
    output = tmp_path / "out"
    scan(archive, output, tiny_checkpoints)
    model, card = load_checkpoint(tiny_checkpoints["classifier"])
    newer = save_checkpoint(model, card.replace(version="tiny-classifier-v2"), tmp_path / "v2" / "classifier")
    checkpoints = {**tiny_checkpoints, "classifier": str(newer)}
    assert scan(archive, output, checkpoints).rows_in_scan == 0
    rescan = scan(archive, output, checkpoints, rescan_on_model_change=True)
    assert rescan.rows_in_scan == 1
    assert rows_of(output, rescan.scan_id)[0]["classifier_version"] == "tiny-classifier-v2"


def test_store_faults_are_retried_or_become_error_rows(ray_local, tiny_checkpoints, s3, s3_endpoint, tmp_path):
    bucket = "faulty-archive"
    s3.create_bucket(Bucket=bucket)
    keys = [f"f/{index}.jpg" for index in range(8)]
    for index, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg_bytes(seed=index))
    with FaultyS3Proxy(s3_endpoint, throttle_every=3, denied_keys={"f/2.jpg"}, vanished_keys={"f/5.jpg"}) as proxy:
        summary = scan(f"s3://{bucket}/f", tmp_path / "out", tiny_checkpoints, endpoint_url=proxy.endpoint)
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in rows_of(tmp_path / "out", summary.scan_id)}
    assert len(rows) == 8
    assert rows["2.jpg"]["status"] == "error" and rows["2.jpg"]["error"].startswith("permission_denied")
    assert rows["5.jpg"]["status"] == "error" and rows["5.jpg"]["error"].startswith("not_found")
    assert all(rows[name]["status"] == "ok" for name in rows if name not in ("2.jpg", "5.jpg"))
    assert proxy.injected["throttled"] > 0
    for row in rows.values():
        assert "testing" not in json.dumps(row, default=str)  # the fake secret never reaches the output


def test_permanent_errors_are_skipped_until_they_change_and_transient_errors_are_retried(
        ray_local, tiny_checkpoints, s3, s3_endpoint, tmp_path):
    bucket = "error-kinds"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="e/photo.jpg", Body=jpeg_bytes(seed=1))
    s3.put_object(Bucket=bucket, Key="e/empty.jpg", Body=b"")
    s3.put_object(Bucket=bucket, Key="e/notes.jpg", Body=b"meeting notes, not a picture\n" * 20)
    s3.put_object(Bucket=bucket, Key="e/denied.jpg", Body=jpeg_bytes(seed=2))
    s3.put_object(Bucket=bucket, Key="e/vanished.jpg", Body=jpeg_bytes(seed=3))
    output = tmp_path / "out"
    with FaultyS3Proxy(s3_endpoint, denied_keys={"e/denied.jpg"}, vanished_keys={"e/vanished.jpg"}) as proxy:
        first = scan(f"s3://{bucket}/e", output, tiny_checkpoints, endpoint_url=proxy.endpoint)
    errors = {r["uri"].rsplit("/", 1)[1]: r["error"].split(":", 1)[0]
              for r in rows_of(output, first.scan_id) if r["status"] == "error"}
    assert errors == {"empty.jpg": "empty", "notes.jpg": "not_an_image",
                      "denied.jpg": "permission_denied", "vanished.jpg": "not_found"}

    # The store recovers: the transient errors are read again, the permanent ones are not.
    second = scan(f"s3://{bucket}/e", output, tiny_checkpoints, endpoint_url=s3_endpoint)
    retried = {r["uri"].rsplit("/", 1)[1]: r["status"] for r in rows_of(output, second.scan_id)}
    assert retried == {"denied.jpg": "ok", "vanished.jpg": "ok"}
    assert (second.skipped_unchanged, second.skipped_permanent_errors) == (3, 2)

    # A permanent error is judged again once the object changes (new size and ETag).
    s3.put_object(Bucket=bucket, Key="e/empty.jpg", Body=jpeg_bytes(seed=4))
    third = scan(f"s3://{bucket}/e", output, tiny_checkpoints, endpoint_url=s3_endpoint)
    assert {r["uri"].rsplit("/", 1)[1]: r["status"] for r in rows_of(output, third.scan_id)} == {"empty.jpg": "ok"}
    assert (third.skipped_unchanged, third.skipped_permanent_errors) == (4, 1)
    manifest = json.loads((output / "_forgescan" / "scans" / f"{third.scan_id}.json").read_text())
    assert manifest["counts"]["unchanged_permanent_errors"] == 1


def test_credentials_never_reach_the_manifest(ray_local, tiny_checkpoints, s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="secret-check")
    s3.put_object(Bucket="secret-check", Key="a.jpg", Body=jpeg_bytes())
    secret = "s3cr3t-value-never-written"
    summary = scan("s3://secret-check", tmp_path / "out", tiny_checkpoints, endpoint_url=s3_endpoint,
                   storage_options={"key": "testing", "secret": secret})
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert summary.rows_in_scan == 1
