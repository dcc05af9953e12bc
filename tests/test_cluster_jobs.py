"""`ray start --head` + the Jobs SDK with token auth: a submitted scan writes the rows it should, row by row."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from pipeline.local_s3 import free_port
from tests.conftest import forget_cluster_address, jpeg_bytes

pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[1]
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}  # Ray 2.60 heads require the token (~/.ray/auth_token) on every client

SUBMIT_AND_WAIT = """
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient

address, working_dir, entrypoint = sys.argv[1], sys.argv[2], sys.argv[3]
runtime_env = {"working_dir": working_dir, "excludes": ["docs/", "bench/results/", "tests/"],
               "env_vars": {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}}
for attempt in range(10):  # a busy head may drop the first connections while its job agent starts
    try:
        client = JobSubmissionClient(address)
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        break
    except OSError:  # requests' ConnectionError while the dashboard drops connections
        if attempt == 9:
            raise
        time.sleep(5)
deadline = time.monotonic() + 600
while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
    if time.monotonic() > deadline:
        client.stop_job(job_id)
        break
    time.sleep(2)
print(json.dumps({"job_id": job_id, "status": str(client.get_job_status(job_id)), "logs": client.get_job_logs(job_id)[-4000:]}))
"""


@pytest.fixture()
def head_node():
    """A `ray start --head --block` of our own: free ports, own temp dir, own process group; stopped by us alone.

    Ray gives a raylet 30 s to register; on a machine this busy that can run out, so start-up is tried up to 3 times.
    """
    temp_dir = tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    failures = []
    try:
        for attempt in range(3):
            head, dashboard, port = start_head(temp_dir, attempt)
            try:
                wait_for_jobs_api(dashboard, head, Path(temp_dir) / f"head-{attempt}.log")
            except RuntimeError as error:
                failures.append(str(error))
                stop_process_group(head)
                forget_cluster_address(port)
                continue
            try:
                yield dashboard
            finally:
                stop_process_group(head)
                forget_cluster_address(port)
            return
        raise RuntimeError("ray start --head failed 3 times:\n" + "\n".join(failures))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def start_head(temp_dir: str, attempt: int) -> tuple[subprocess.Popen, str, int]:
    ports = {name: free_port() for name in ("port", "dashboard-port", "node-manager-port", "object-manager-port",
                                            "ray-client-server-port", "dashboard-agent-listen-port",
                                            "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")}
    arguments = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                 "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
                 "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", temp_dir,
                 *[item for name, port in ports.items() for item in (f"--{name}", str(port))]]
    log = Path(temp_dir) / f"head-{attempt}.log"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # `python` = this venv, as if activated
    head = subprocess.Popen(arguments, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **TOKEN_AUTH, "PATH": path})
    return head, f"http://127.0.0.1:{ports['dashboard-port']}", ports["port"]


def wait_for_jobs_api(dashboard: str, head: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{dashboard}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 without the token): the SDK authenticates
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"the Jobs API at {dashboard} did not come up:\n{log.read_text()[-3000:]}")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM lets `ray start --block` stop its node; SIGKILL whatever of our group is left. Never `ray stop`."""
    for sent, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers left in the group after the head exited
    except ProcessLookupError:
        pass


def test_scan_submitted_with_the_jobs_sdk_and_token_auth_writes_every_row(head_node, tiny_checkpoints, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    images = {f"photo-{index}.jpg": (jpeg_bytes(64 + 16 * index, 48 + 8 * index, seed=index), 64 + 16 * index, 48 + 8 * index)
              for index in range(3)}
    for name, (data, _, _) in images.items():
        (archive / name).write_bytes(data)
    (archive / "page.jpg").write_bytes(b"<html>not an image</html>")
    output = tmp_path / "out"
    entrypoint = (f"python -m jobs.scan {archive} --output {output} --classifier {tiny_checkpoints['classifier']} "
                  f"--segmenter {tiny_checkpoints['segmenter']} --decode-cpus 0.5 --cpus-per-actor 0.5 --no-progress")

    result = subprocess.run([sys.executable, "-c", SUBMIT_AND_WAIT, head_node, str(REPO), entrypoint],
                            capture_output=True, text=True, timeout=900, env={**os.environ, **TOKEN_AUTH})
    assert result.returncode == 0, result.stderr[-3000:]
    job = json.loads(result.stdout.strip().splitlines()[-1])
    assert job["status"] == "SUCCEEDED", job["logs"]
    assert "4 objects" in job["logs"]

    rows = {Path(row["uri"]).name: row for row in
            pads.dataset(str(output), format="parquet", partitioning="hive", exclude_invalid_files=True).to_table().to_pylist()}
    assert sorted(rows) == sorted([*images, "page.jpg"])
    for name, (data, width, height) in images.items():
        row = rows[name]
        assert row["uri"] == (archive / name).as_uri()
        assert row["status"] == "ok" and row["error"] is None
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert (row["format"], row["width"], row["height"], row["size_bytes"]) == ("JPEG", width, height, len(data))
        assert row["verdict"] in ("authentic", "ai_generated", "manipulated")
        assert row["mask_rle"]["size"] == [height, width]
        assert row["classifier_version"] == "tiny-classifier-untrained"
        assert row["segmenter_version"] == "tiny-segmenter-untrained"
    bad = rows["page.jpg"]
    assert (bad["status"], bad["verdict"]) == ("error", "error")
    assert bad["error"].startswith("not_an_image:")
