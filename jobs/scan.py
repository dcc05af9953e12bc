"""`forgescan scan SOURCE --output DEST`: scan an archive into Parquet (also `python -m jobs.scan` for ray job submit)."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ANALYSIS_MODES, AUTO, ConfigError, ScanConfig


def _pool_size(text: str) -> int | tuple[int, int] | str:
    """`auto`, `N` or `MIN-MAX`; the ranges themselves are checked by ScanConfig."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        if "-" in text.strip().lstrip("-"):
            low, high = text.strip().split("-", 1)
            return int(low), int(high)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, N or MIN-MAX (whole numbers, e.g. 2 or 1-4)") from None


def _pool_text(pool: int | tuple[int, int] | str) -> str:
    return f"{pool[0]}-{pool[1]}" if isinstance(pool, tuple) else str(pool)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="s3://bucket/prefix, gs://bucket/prefix, a folder, file://..., or a manifest (.parquet with a `uri` column, or .txt of URIs)")
    parser.add_argument("--output", "-o", required=True, help="destination prefix (local folder, s3://, gs://)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3)")
    parser.add_argument("--classifier", help="classifier .safetensors checkpoint (default: the bundled demo checkpoint)")
    parser.add_argument("--segmenter", help="segmenter .safetensors checkpoint (default: the bundled demo checkpoint)")
    defaults = ScanConfig.__dataclass_fields__
    parser.add_argument("--batch-size", type=int, default=ScanConfig.batch_size,
                        help=f"images per model call (default {ScanConfig.batch_size})")
    parser.add_argument("--actors", type=_pool_size, default=defaults["num_model_actors"].default,
                        help="model actor pool size: N, MIN-MAX, or auto (from 1 up to one actor per core, or per "
                             f"--gpus-per-actor GPUs) (default {_pool_text(defaults['num_model_actors'].default)})")
    parser.add_argument("--gpus-per-actor", type=float, default=ScanConfig.gpus_per_actor,
                        help=f"GPUs per model actor, fractions allowed (default {ScanConfig.gpus_per_actor:g}: CPU)")
    parser.add_argument("--cpus-per-actor", type=float, default=ScanConfig.cpus_per_actor,
                        help=f"CPUs per model actor (default {ScanConfig.cpus_per_actor:g})")
    parser.add_argument("--decode-cpus", type=float, default=ScanConfig.decode_cpus,
                        help=f"CPUs per fetch-and-decode task (default {ScanConfig.decode_cpus:g})")
    parser.add_argument("--max-pixels", type=int, default=ScanConfig.max_pixels,
                        help=f"larger images become too_large error rows (default {ScanConfig.max_pixels:,})")
    parser.add_argument("--max-bytes", type=int, default=ScanConfig.max_bytes,
                        help=f"larger objects become too_large error rows, judged by the listing's size before reading "
                             f"(default {ScanConfig.max_bytes:,})")
    parser.add_argument("--min-side", type=int, default=ScanConfig.min_side,
                        help=f"images with a shorter side get a too_small error row instead of a verdict "
                             f"(default {ScanConfig.min_side} px)")
    parser.add_argument("--analysis", choices=ANALYSIS_MODES, default=ScanConfig.analysis,
                        help="native: the models' native-resolution crops and tiles (what they were trained for; cost grows "
                             "with megapixels); triage: one centre crop and a thumbnail per image, a fixed and far smaller "
                             f"cost for CPU-only first passes (default {ScanConfig.analysis})")
    parser.add_argument("--extensions", default="", help="only scan keys with these comma-separated suffixes (default: every object)")
    parser.add_argument("--address", help="attach to an existing Ray cluster (default: RAY_ADDRESS, or start a local one)")
    parser.add_argument("--full", action="store_true", help="process every object, ignoring earlier scans")
    parser.add_argument("--rescan-on-model-change", action="store_true", help="re-process objects last scanned with other model versions")
    parser.add_argument("--scan-id", help="explicit scan id (default: resume an interrupted scan of this source, else a new id)")
    parser.add_argument("--rows-per-file", type=int, default=ScanConfig.rows_per_file,
                        help=f"rows per committed Parquet file (default {ScanConfig.rows_per_file})")
    parser.add_argument("--match-bank", metavar="PATH",
                        help="Parquet of known PDQ hashes (columns pdq_hash, label): report matches per row in bank_matches")
    parser.add_argument("--no-progress", action="store_true", help="hide Ray Data progress bars")


def config_from_args(args: argparse.Namespace) -> ScanConfig:
    return ScanConfig(
        source=args.source, output=args.output, endpoint_url=args.endpoint_url,
        classifier_checkpoint=args.classifier, segmenter_checkpoint=args.segmenter,
        batch_size=args.batch_size, num_model_actors=args.actors, gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor, decode_cpus=args.decode_cpus, max_pixels=args.max_pixels,
        max_bytes=args.max_bytes, min_side=args.min_side,
        analysis=args.analysis, match_bank=args.match_bank,
        address=args.address, full=args.full, rescan_on_model_change=args.rescan_on_model_change,
        scan_id=args.scan_id, extensions=tuple(e for e in args.extensions.split(",") if e),
        rows_per_file=args.rows_per_file, show_progress=not args.no_progress,
    )


def user_errors() -> tuple[type[Exception], ...]:
    """Errors the user can fix. Imported late, so a refused flag answers before torch and Ray load."""
    from forensics.checkpoint import CheckpointError
    from pipeline.scan import ScanError
    from pipeline.hash_bank import HashBankError
    from pipeline.storage import StorageError

    return StorageError, CheckpointError, ScanError, HashBankError


def run_and_report(config: ScanConfig):
    """Run a scan; print the summary, or one clear line for errors the user can fix. Returns the summary or None."""
    from pipeline.console import quiet_console
    from pipeline.scan import run_scan

    try:
        with quiet_console():
            summary = run_scan(config)
    except user_errors() as error:
        print(f"forgescan: error: {error}", file=sys.stderr)
        return None
    print(summary.render())
    return summary


class Stopped(BaseException):
    """SIGTERM during a scan: unwinds like Ctrl-C, so the process exits with 143 and one line."""


def _stop_on_sigterm(signum, frame):
    raise Stopped()


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 done, 2 refused or failed with a message, 130 Ctrl-C, 143 SIGTERM (both resumable)."""
    import signal

    try:
        config = config_from_args(args)
    except ConfigError as error:  # before anything is written or started
        print(f"forgescan: error: {error}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return 0 if run_and_report(config) is not None else 2
    except (KeyboardInterrupt, Stopped) as stop:
        code, cause = (143, "SIGTERM") if isinstance(stop, Stopped) else (130, "Ctrl-C")
        print(f"forgescan: scan of {config.source} stopped by {cause}; committed results are kept and the same "
              "command resumes it", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.scan"))
