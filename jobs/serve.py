"""`forgescan serve`: answer single-image checks over HTTP (Ray Serve + FastAPI) with the scan's models."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from forensics.checkpoint import CheckpointError
from pipeline.config import ANALYSIS_MODES
from pipeline.serving import ServeConfig


def replica_count(text: str) -> int | tuple[int, int]:
    """--replicas: N, or MIN-MAX for Serve's autoscaling (ServeConfig checks the numbers)."""
    try:
        if "-" in text:
            low, high = text.split("-", 1)
            return int(low), int(high)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX (e.g. 2 or 1-4), got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeConfig()
    parser.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port to listen on (default {defaults.port})")
    parser.add_argument("--classifier", help="classifier .safetensors checkpoint (default: the bundled checkpoint)")
    parser.add_argument("--segmenter", help="segmenter .safetensors checkpoint (default: the bundled checkpoint)")
    parser.add_argument("--analysis", choices=ANALYSIS_MODES, default=defaults.analysis,
                        help=f"native-resolution crops and tiles, or the quick triage (default {defaults.analysis})")
    parser.add_argument("--replicas", type=replica_count, default=defaults.replicas,
                        help=f"Serve replicas, N or MIN-MAX for autoscaling (default {defaults.replicas})")
    parser.add_argument("--cpus-per-replica", type=float, default=defaults.cpus_per_replica,
                        help=f"CPUs per replica (default {defaults.cpus_per_replica:g})")
    parser.add_argument("--gpus-per-replica", type=float, default=defaults.gpus_per_replica,
                        help=f"GPUs per replica, fractions allowed (default {defaults.gpus_per_replica:g}: CPU)")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help=f"uploads per model call under load (default {defaults.max_batch_size})")
    parser.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_timeout_s * 1000,
                        help=f"how long a batch waits to fill (default {defaults.batch_wait_timeout_s * 1000:g} ms)")
    parser.add_argument("--max-upload-bytes", type=int, default=defaults.max_upload_bytes,
                        help=f"larger uploads get 413 (default {defaults.max_upload_bytes:,})")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels,
                        help=f"larger images get 413 too_large (default {defaults.max_pixels:,})")
    parser.add_argument("--address", help="attach to an existing Ray cluster (default: RAY_ADDRESS, or start a local one)")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        classifier_checkpoint=args.classifier, segmenter_checkpoint=args.segmenter, host=args.host, port=args.port,
        analysis=args.analysis, max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels,
        max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000, replicas=args.replicas,
        cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
    )


def check_checkpoints(config: ServeConfig) -> None:
    """Fail before Ray starts when a checkpoint is missing, unreadable or of the wrong kind (the replicas load them)."""
    from forensics.checkpoint import read_checkpoint
    from forensics.model_card import CLASSIFIER, SEGMENTER

    for path, kind in ((config.classifier_checkpoint, CLASSIFIER), (config.segmenter_checkpoint, SEGMENTER)):
        if path is not None:
            read_checkpoint(path, expected_kind=kind)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
        check_checkpoints(config)
    except (ValueError, CheckpointError, OSError) as error:
        print(f"forgescan: error: {error}", file=sys.stderr)
        return 2
    import ray
    from ray import serve

    from pipeline.serving import build_app

    ray.init(address=args.address, logging_level=logging.WARNING)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name="forgescan", route_prefix="/")
    print(f"forgescan serve: listening on http://{config.host}:{config.port}/ "
          f"(GET /health, POST /predict with form field `file`); Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # `kill`, Kubernetes: shut Serve down like Ctrl-C
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.serve"))
