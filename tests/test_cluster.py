"""A two-node local Ray cluster: the model stage lands on the GPU node and falls back to CPU inside the actor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from pipeline.local_s3 import free_port
from tests.conftest import forget_cluster_address, jpeg_bytes

pytestmark = pytest.mark.cluster


def start_node(arguments: list[str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group, so teardown stops exactly this node."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen([ray_cli, "start", "--block", "--node-ip-address", "127.0.0.1", *arguments],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "token"})


def stop_node(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_for_gpu_node(address: str, timeout: float = 120) -> None:
    script = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
              "print(ray.cluster_resources().get('GPU', 0))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run([sys.executable, "-c", script, address], capture_output=True, text=True,
                                env={**os.environ, "RAY_AUTH_MODE": "token"})
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == ["1.0"]:
            return
        time.sleep(3)
    raise TimeoutError(f"the GPU worker node did not join {address}")


@pytest.fixture()
def two_node_cluster(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_node(["--head", "--port", str(port), "--num-cpus", "1", "--num-gpus", "0",
                       "--include-dashboard", "false"], tmp_path / "head.log")
    time.sleep(5)
    worker = start_node(["--address", address, "--num-cpus", "2", "--num-gpus", "1"], tmp_path / "worker.log")
    try:
        wait_for_gpu_node(address)
        yield address
    finally:
        stop_node(worker)
        stop_node(head)
        forget_cluster_address(port)


def test_model_actors_are_scheduled_on_gpu_resources_and_fall_back_to_cpu(two_node_cluster, tiny_checkpoints, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    for index in range(4):
        (archive / f"{index}.jpg").write_bytes(jpeg_bytes(seed=index))
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.scan", str(archive), "--output", str(output), "--address", two_node_cluster,
         "--gpus-per-actor", "1", "--classifier", tiny_checkpoints["classifier"],
         "--segmenter", tiny_checkpoints["segmenter"], "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pads.dataset(str(output), partitioning="hive").to_table().to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    devices = {r["inference_device"] for r in rows}
    assert len(devices) == 1
    device = devices.pop()
    assert device.startswith("cpu (assigned GPU") and "CUDA unavailable" in device, device
