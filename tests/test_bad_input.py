"""Bad input and operator mistakes: refused up front in one line (exit 2, nothing written), or one row per object."""

from __future__ import annotations

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
