"""Bad input and operator mistakes: refused up front in one line (exit 2, nothing written), or one row per object."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, ScanConfig
from tests.conftest import jpeg_bytes

REPO = Path(__file__).parents[1]


def run_scan_command(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.scan", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "0"], "--batch-size 0"),
    (["--actors", "0"], "--actors 0"),
    (["--actors", "3-1"], "--actors 3-1: MIN is larger than MAX"),
    (["--gpus-per-actor", "-1"], "--gpus-per-actor -1"),
    (["--rows-per-file", "0", "--max-pixels", "-5"], "--rows-per-file 0"),
])
def test_bad_flags_are_refused_in_one_line_before_anything_starts(tmp_path, flags, named):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "a.jpg").write_bytes(jpeg_bytes())
    output = tmp_path / "out"
    result = run_scan_command(str(tmp_path / "archive"), "--output", str(output), *flags)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("forgescan: error: ") and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "ray" not in result.stderr.lower()
    assert not output.exists(), "nothing may be written for a refused scan"


def test_unparseable_pool_size_is_an_argparse_error_naming_the_form(tmp_path):
    result = run_scan_command(str(tmp_path), "--output", str(tmp_path / "out"), "--actors", "two")
    assert result.returncode == 2
    assert "N or MIN-MAX" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("settings, named", [
    ({"decode_cpus": 0}, "--decode-cpus 0"),
    ({"cpus_per_actor": float("nan")}, "--cpus-per-actor nan"),
    ({"num_model_actors": (0, 2)}, "--actors 0-2"),
    ({"gpus_per_actor": 1.5}, "--gpus-per-actor 1.5"),
    ({"analysis": "fast"}, "--analysis fast"),
    ({"extensions": (".",)}, "--extensions"),
    ({"scan_id": "a/b"}, "--scan-id"),
    ({"output": ""}, "--output is empty"),
])
def test_every_setting_is_checked_by_the_config(settings, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(".", r"\.")):
        ScanConfig(**{"source": "/archive", "output": "/out", **settings})


def test_defaults_are_valid_and_all_problems_are_named_together():
    assert ScanConfig(source="/a", output="/b").problems() == []
    with pytest.raises(ConfigError) as raised:
        ScanConfig(source="/a", output="/b", batch_size=0, rows_per_file=0)
    assert "--batch-size 0" in str(raised.value) and "--rows-per-file 0" in str(raised.value)


def test_a_pool_for_a_known_number_of_objects_is_no_larger_than_their_batches():
    config = ScanConfig(source="/a", output="/b", batch_size=32)
    assert config.model_pool_size(16, 0, pending_objects=5) == (1, 1)
    assert config.model_pool_size(16, 0, pending_objects=100) == (1, 4)  # 4 batches of at most 32
    assert config.model_pool_size(2, 0, pending_objects=10_000) == (1, 2)  # the cluster still caps it
    assert ScanConfig(source="/a", output="/b", num_model_actors=(2, 8)).model_pool_size(64, 0, pending_objects=40) == (2, 2)
    assert ScanConfig(source="/a", output="/b", num_model_actors=3).model_pool_size(64, 0, pending_objects=1) == 1


def test_auto_pool_grows_to_the_cluster_and_an_actor_pool_that_starves_the_pipeline_is_refused():
    config = ScanConfig(source="/a", output="/b")
    assert config.model_pool_size(cluster_cpus=2, cluster_gpus=0) == (1, 2)  # two one-thread actors on 2 cores
    assert config.model_pool_size(cluster_cpus=16, cluster_gpus=0) == (1, 16)
    assert ScanConfig(source="/a", output="/b", gpus_per_actor=1).model_pool_size(64, 4) == (1, 4)
    assert ScanConfig(source="/a", output="/b", num_model_actors=3).model_pool_size(64, 0) == 3
    assert config.resource_problem(cluster_cpus=2) is None
    # two 1-CPU actors take both CPUs first; the 1-CPU repartition task could never start
    starving = ScanConfig(source="/a", output="/b", num_model_actors=2, cpus_per_actor=1, decode_cpus=1)
    problem = starving.resource_problem(cluster_cpus=2)
    assert "--actors 2 x --cpus-per-actor 1" in problem and "wait forever" in problem and "--actors auto" in problem
    assert "at least 1.5 CPUs" in config.resource_problem(cluster_cpus=1)


def _odd_archive(root: Path) -> dict[str, str]:
    """A folder with every kind of odd entry; returns relative name -> the row's expected error kind (or 'ok')."""
    import socket

    root.mkdir()
    (root / "good.jpg").write_bytes(jpeg_bytes(96, 64, seed=1))
    os.mkfifo(root / "pipe.jpg")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "socket.png"))
    listener.close()
    (root / "sub").mkdir()
    (root / "sub" / "inner.jpg").write_bytes(jpeg_bytes(64, 80, seed=2))
    (root / "sub" / "loop").symlink_to("..")  # a link back up: followed once, then reported
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "tiny.png").write_bytes(_png(8, 8))
    (root / "big.jpg").write_bytes(jpeg_bytes(400, 300, seed=3, quality=100))
    non_utf8 = os.fsdecode(b"caf\xe9-latin1.jpg")
    (root / non_utf8).write_bytes(jpeg_bytes(70, 70, seed=4))
    return {"good.jpg": "ok", "pipe.jpg": "not_a_regular_file", "socket.png": "not_a_regular_file",
            "sub/inner.jpg": "ok", "sub/loop/": "symlink_loop", "dangling.jpg": "broken_symlink",
            "tiny.png": "too_small", "big.jpg": "too_large", "caf%E9-latin1.jpg": "ok"}


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    from tests.conftest import png_bytes

    return png_bytes(Image.new("RGB", (width, height), (9, 9, 9)))


def _deep_folder(root: Path) -> str:
    """A folder whose path is longer than PATH_MAX: no user, root included, can list it by name."""
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    relative = []
    for level in range(25):
        name = f"{level:02d}" + "d" * 200
        os.mkdir(name, dir_fd=descriptor)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=descriptor)
        os.close(descriptor)
        descriptor = child
        relative.append(name)
    with open(os.open("lost.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=descriptor), "wb") as handle:
        handle.write(jpeg_bytes())
    os.close(descriptor)
    return "/".join(relative)


def test_listing_reports_special_files_links_odd_names_and_unreadable_folders(tmp_path):
    from pipeline.storage import iter_listing

    expected = _odd_archive(tmp_path / "archive")
    deep = _deep_folder(tmp_path / "archive")
    entries = [e for page in iter_listing(str(tmp_path / "archive")) for e in page]
    prefix = "file://" + str(tmp_path / "archive") + "/"
    by_name = {e["uri"][len(prefix):]: e for e in entries}
    for name, kind in expected.items():
        assert name in by_name, f"{name} has no listing entry"
        if kind in ("not_a_regular_file", "symlink_loop", "broken_symlink"):
            assert by_name[name]["error"].startswith(kind + ": "), by_name[name]
    unreadable = [e for e in entries if (e["error"] or "").startswith("listing_failed: ")]
    assert unreadable, "a folder that cannot be listed must be reported"
    assert deep.split("/")[0] in unreadable[0]["uri"] and "not scanned" in unreadable[0]["error"]


def test_manifest_lines_other_schemes_bad_bytes_and_duplicates(tmp_path):
    from pipeline.storage import iter_listing

    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    manifest = tmp_path / "uris.txt"
    manifest.write_bytes(b"\n".join([str(image).encode(), b"https://example.org/x.jpg", b"file://" + str(image).encode(),
                                     b"ftp://host/y.png", b"s3://b/caf\xe9.jpg", b"s3://b/k.jpg", b"s3a://b/k.jpg"]))
    entries = [e for page in iter_listing(str(manifest)) for e in page]
    uris = [e["uri"] for e in entries]
    assert len(uris) == len(set(uris)) == 5, uris  # the local file and s3://b/k.jpg once each
    errors = {e["uri"]: e["error"] for e in entries if e["error"]}
    assert errors["https://example.org/x.jpg"].startswith("unsupported_scheme: ") and "https://" in errors["https://example.org/x.jpg"]
    assert errors["ftp://host/y.png"].startswith("unsupported_scheme: ")
    assert errors["s3://b/caf\\xe9.jpg"].startswith("bad_manifest_line: ")


def test_scan_gives_every_odd_object_a_row_and_skips_its_own_output(ray_local, tiny_checkpoints, tmp_path):
    from pipeline import ScanConfig, run_scan
    from tests.test_scan import read_scan

    root = tmp_path / "archive"
    expected = _odd_archive(root)
    output = root / "results"  # inside the source
    output.mkdir()
    summary = run_scan(ScanConfig(source=str(root), output=str(output), classifier_checkpoint=tiny_checkpoints["classifier"],
                                  segmenter_checkpoint=tiny_checkpoints["segmenter"], show_progress=False,
                                  max_bytes=20_000, batch_size=4))
    rows = read_scan(output, summary.scan_id)
    prefix = "file://" + str(root) + "/"
    by_name = {r["uri"][len(prefix):]: r for r in rows}
    assert set(by_name) == set(expected), sorted(by_name)
    for name, kind in expected.items():
        row = by_name[name]
        if kind == "ok":
            assert row["status"] == "ok", row["error"]
        else:
            assert row["status"] == "error" and row["error"].startswith(kind + ": "), (name, row["error"])
    assert "20,000" in by_name["big.jpg"]["error"] and "--max-bytes" in by_name["big.jpg"]["error"]
    assert by_name["tiny.png"]["width"] == 8
    assert any("lies inside the source" in note for note in summary.notes)


@pytest.mark.parametrize("stop_signal, exit_code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signals_stop_the_scan_cleanly_with_the_conventional_exit_code(tiny_checkpoints, s3, s3_endpoint, tmp_path,
                                                                      stop_signal, exit_code):
    import signal
    import time

    from tests.faulty_s3_proxy import FaultyS3Proxy
    from tests.test_scan import read_scan

    bucket = f"signal-archive-{stop_signal.lower()}"
    s3.create_bucket(Bucket=bucket)
    keys = [f"p/{index:03d}.jpg" for index in range(150)] + ["p/zzz-held.jpg"]  # listed last, past the first listing blocks
    for index, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg_bytes(64, 64, seed=index))
    output = tmp_path / "out"
    with FaultyS3Proxy(s3_endpoint, stalled_keys={"p/zzz-held.jpg"}, stall_seconds=30) as proxy:
        # The store holds the last object's read, so the scan is mid-pipeline (files committed, one read
        # outstanding) when the signal arrives, however fast the machine is.
        arguments = [f"s3://{bucket}/p", "--output", str(output), "--endpoint-url", proxy.endpoint, "--address", "local",
                     "--no-progress", "--classifier", tiny_checkpoints["classifier"],
                     "--segmenter", tiny_checkpoints["segmenter"], "--batch-size", "2", "--rows-per-file", "2",
                     "--actors", "1"]
        # A shell's background job (`make test &`, CI runners) starts with SIGINT ignored, and a child inherits that;
        # the scan under test gets the default disposition back, as in a terminal.
        process = subprocess.Popen([sys.executable, "-m", "jobs.scan", *arguments], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while not list(output.rglob("*.parquet")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)  # wait until the scan is under way (a first file committed)
        assert process.poll() is None, process.communicate()
        process.send_signal(getattr(signal, stop_signal))
        time.sleep(1)
        proxy.release()  # the stop lets the in-flight read finish
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == exit_code, stderr[-3000:]
        assert "Traceback" not in stderr
        stop_lines = [line for line in stderr.splitlines() if "stopped by" in line]
        assert len(stop_lines) == 1 and "resumes it" in stop_lines[0], stderr[-3000:]
        manifests = [p.read_text() for p in output.rglob("*.json")]
        assert manifests and all('"complete"' not in text for text in manifests), "an interrupted scan must not claim completion"

        rerun = run_scan_command(*arguments)  # the same command resumes the stopped scan and finishes it
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(row["uri"] for row in read_scan(output)) == sorted(f"s3://{bucket}/{key}" for key in keys)
    assert any('"complete"' in p.read_text() for p in output.rglob("*.json"))


def test_gpus_per_actor_on_a_cluster_without_gpus_is_refused_naming_the_flag(tiny_checkpoints, tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "a.jpg").write_bytes(jpeg_bytes())
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.scan", str(tmp_path / "archive"), "--output", str(output), "--address", "local",
         "--gpus-per-actor", "1", "--classifier", tiny_checkpoints["classifier"],
         "--segmenter", tiny_checkpoints["segmenter"]],
        cwd=REPO, capture_output=True, text=True, timeout=300,  # a hang guard: without the check it waits forever
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # a private Ray instance with no GPU, whatever the machine has
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--gpus-per-actor 1: no node of the Ray cluster has a GPU" in result.stderr
    assert "--gpus-per-actor 0" in result.stderr and "Traceback" not in result.stderr
    assert not [p for p in output.rglob("*.json") if '"running"' in p.read_text()], "no scan may be left running"


@pytest.mark.parametrize("given_as", ["--address", "RAY_ADDRESS"])
def test_a_dead_cluster_address_fails_in_one_line_naming_it_and_the_local_fix(tmp_path, given_as):
    from pipeline.local_s3 import free_port

    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "a.jpg").write_bytes(jpeg_bytes())
    address = f"127.0.0.1:{free_port()}"  # nothing listens there: a cluster that is gone
    flags = ["--address", address] if given_as == "--address" else []
    environment = {**os.environ, "RAY_ADDRESS": address} if given_as == "RAY_ADDRESS" else dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "jobs.scan", str(tmp_path / "archive"), "--output",
                             str(tmp_path / "out"), *flags], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=environment)  # a hang guard: Ray alone retries the GCS for minutes
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("forgescan: error: No Ray cluster answers at " + address), result.stderr
    assert given_as in lines[0] and "--address local" in lines[0]
    assert "Failed to connect to GCS" not in result.stderr


def test_an_unreachable_s3_endpoint_fails_with_s3_advice_and_shows_its_retries(tmp_path):
    from pipeline.local_s3 import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # connection refused
    result = run_scan_command("s3://archive/photos", "--output", str(tmp_path / "out"), "--endpoint-url", endpoint)
    assert result.returncode == 2, result.stderr[-3000:]
    retries = [line for line in result.stderr.splitlines() if "retrying" in line]
    assert retries and all(endpoint in line for line in retries), result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("forgescan: error: Cannot reach the object store for s3://archive/photos at " + endpoint)
    assert "Connection refused" in error and "--endpoint-url" in error and "AWS_ACCESS_KEY_ID" in error
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_an_unreachable_gcs_source_fails_with_gcs_advice_not_an_s3_flag(tmp_path):
    from pipeline.local_s3 import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # an emulator that is not running stands in for a machine offline
    result = subprocess.run([sys.executable, "-m", "jobs.scan", "gs://archive/photos", "--output", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "STORAGE_EMULATOR_HOST": endpoint})
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("forgescan: error: Cannot reach the object store for gs://archive/photos at " + endpoint)
    assert "Application Default Credentials" in error and "STORAGE_EMULATOR_HOST" in error
    assert "--endpoint-url" not in result.stderr and "AWS" not in result.stderr and "Traceback" not in result.stderr


QUIET_NOISE = ("Token authentication is enabled", "core_worker.cc", "has constructor arguments in the object store",
               "Progress will be logged because", "Progress bars disabled", "Found credentials",
               "gcsfs experimental features")


def test_a_scan_prints_ray_data_progress_but_none_of_the_known_noise(s3, s3_endpoint, tiny_checkpoints, tmp_path):
    s3.create_bucket(Bucket="quiet-archive")
    for index in range(2):
        s3.put_object(Bucket="quiet-archive", Key=f"photos/{index}.jpg", Body=jpeg_bytes(64, 64, seed=index))
    result = run_scan_command("s3://quiet-archive/photos", "--output", str(tmp_path / "out"), "--endpoint-url",
                              s3_endpoint, "--address", "local", "--classifier", tiny_checkpoints["classifier"],
                              "--segmenter", tiny_checkpoints["segmenter"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished" in result.stdout and "2 ok" in result.stdout
    assert "Running Dataset" in result.stderr, "Ray Data's progress is kept"
    assert [noise for noise in QUIET_NOISE if noise in result.stderr] == [], result.stderr[-3000:]
