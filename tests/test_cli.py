"""The command line: user mistakes give one clear line and exit code 2, never a stack trace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forensics.checkpoint import save_checkpoint
from forensics.model_card import default_segmenter_card
from forensics.models import build_model
from jobs.cli import build_parser
from pipeline import ScanConfig, run_scan
from pipeline.storage import StorageError
from tests.conftest import jpeg_bytes
from tests.faulty_s3_proxy import FaultyS3Proxy

REPO = Path(__file__).parents[1]


def run_scan_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.scan", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_every_job_is_a_subcommand():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"scan", "demo"} <= set(choices)


def test_a_command_loads_only_its_own_job_module():
    probe = ("import sys; from jobs.cli import build_parser; build_parser(only='scan');"
             "print(sorted(m for m in ('torch', 'fastapi', 'jobs.serve', 'jobs.train', 'jobs.scan') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['jobs.scan']"


def test_training_and_calibration_commands_take_their_defaults_from_train_settings():
    from forensics.training import TrainSettings

    settings = TrainSettings()
    parser = build_parser()
    train = parser.parse_args(["train", "segmenter", "--data", "d", "--output", "o"])
    for name in ("epochs", "batch_size", "learning_rate", "weight_decay", "warmup_fraction", "gradient_clip", "seed",
                 "threads", "loader_workers", "target_fpr"):
        assert getattr(train, name) == getattr(settings, name), name
    assert parser.parse_args(["calibrate", "segmenter", "--checkpoint", "c", "--data", "d"]).target_fpr == settings.target_fpr
    assert parser.parse_args(["evaluate", "segmenter", "--data", "d", "--output", "o"]).target_fpr == settings.target_fpr


def test_wrong_architecture_checkpoint_is_one_line_and_exit_code_2(tmp_path):
    card = default_segmenter_card((64, 64))
    path = save_checkpoint(build_model(card), card, tmp_path / "seg")
    card.replace(architecture={"arch": "Unet", "encoder_name": "resnet18", "classes": 1}).write(path.with_suffix(".json"))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(jpeg_bytes())
    result = run_scan_command(str(tmp_path / "a"), "--output", str(tmp_path / "out"), "--segmenter", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"forgescan: error: Checkpoint {path} does not match architecture" in result.stderr


def test_unreadable_checkpoint_names_the_file(tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    (tmp_path / "a").mkdir()
    result = run_scan_command(str(tmp_path / "a"), "--output", str(tmp_path / "out"), "--classifier", str(bogus))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bogus) in result.stderr


def test_missing_source_folder_is_reported(tmp_path):
    result = run_scan_command(str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_rejected_credentials_are_one_clear_message(s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="creds-check")
    with FaultyS3Proxy(s3_endpoint, reject_credentials=True) as proxy:
        with pytest.raises(StorageError, match="was refused.*Check the credentials in the standard AWS chain"):
            run_scan(ScanConfig(source="s3://creds-check/x", output=str(tmp_path / "out"), endpoint_url=proxy.endpoint))


def test_standard_endpoint_variable_is_honoured(s3, s3_endpoint, monkeypatch):
    from pipeline.storage import check_source, iter_listing

    s3.create_bucket(Bucket="endpoint-from-env")
    s3.put_object(Bucket="endpoint-from-env", Key="p/a.jpg", Body=b"x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert check_source("s3://endpoint-from-env/p", None).location.bucket == "endpoint-from-env"
    pages = list(iter_listing("s3://endpoint-from-env/p"))
    assert [entry["uri"] for entry in pages[0]] == ["s3://endpoint-from-env/p/a.jpg"]


@pytest.mark.parametrize("command, flags, named", [
    ("serve", ["--replicas", "two"], "N or MIN-MAX"),
    ("benchmark", ["--sizes", "64,lots"], "comma-separated image counts"),
    ("benchmark", ["--sizes", "0"], "comma-separated image counts"),
])
def test_a_malformed_flag_value_names_the_form_expected_not_a_function(command, flags, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser(only=command).parse_args([command, *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert named in error and flags[0] in error and "_replicas" not in error and "_sizes" not in error


@pytest.mark.parametrize("replicas", ["0", "3-1"])
def test_serve_refuses_replica_counts_serve_cannot_run_naming_the_flag(replicas, capsys):
    from jobs import serve

    args = build_parser(only="serve").parse_args(["serve", "--replicas", replicas])
    assert serve.run(args) == 2
    assert f"(--replicas) must be N >= 1 or MIN-MAX with 1 <= MIN <= MAX, got {replicas}" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--limit", "-1"], "--limit -1: the number of images to show must be 0 or more"),
    (["--min-score", "1.5"], "--min-score 1.5: scores are probabilities, pass a value between 0 and 1"),
])
def test_report_names_the_flag_and_the_value_it_refuses(flags, message, tmp_path, capsys):
    from jobs import report

    args = build_parser(only="report").parse_args(["report", str(tmp_path), *flags])
    assert report.run(args) == 2
    assert message in capsys.readouterr().err
